"""What a metric is, for every reader of results: its title, its direction, how per-sample
values aggregate, whether it is 0/1. Each task file lists its METRICS; nothing else keeps a
metric table (plots, the workbench, the report and the post-hoc stages look them up here)."""

from __future__ import annotations

from dataclasses import dataclass

AGGREGATES = ("mean", "sum", "ppl")  # bootstrap mean; a count; token-weighted exp of mean NLL


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    higher_is_better: bool = True
    aggregate: str = "mean"
    binary: bool = False  # 0/1 per sample (right or wrong)

    def __post_init__(self):
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"metric {self.name}: aggregate must be one of {AGGREGATES}")


def accuracy(name: str, title: str) -> Metric:
    return Metric(name, title, binary=True)


# the post-hoc stages' metrics, listed by the tasks that run them
JUDGE = (Metric("judge_score", "judge score (1-10)"),
         Metric("reference_score", "judge score of the reference (1-10)"),
         Metric("win_rate", "win rate vs reference"),
         Metric("order_disagreement", "judge order disagreement", higher_is_better=False),
         Metric("unparsed", "unparsed judgments", higher_is_better=False, aggregate="sum"))
FLUENCY = (Metric("answer_ppl", "answer perplexity (dense model)", higher_is_better=False,
                  aggregate="ppl"),)
# added to every compressed run of a generation or choice task (kickbench/divergence.py)
DIVERGENCE = (Metric("kl", "KL(dense ‖ compressed) of the next token (nats)",
                     higher_is_better=False),)


def aspects(rubric) -> tuple[Metric, ...]:
    """A judge rubric's aspects, each a 1-10 score."""
    return tuple(Metric(a, f"judge: {a} (1-10)") for a in rubric.aspects)
