"""Judging free-form answers: an LLM judge (HTTP endpoint or local model) compares an answer
with a reference in both orders, or grades it alone; replies it cannot read are retried once
with a stricter instruction, then counted as unparsed (never dropped, never scored as zero).
Every reply is cached by a hash of the judge's identity and the full prompt."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from . import rubric as R
from .expected import Layout
from .http import HTTPJudge, JudgeError, redact_url
from .local import LocalJudge

PROTOCOL_VERSION = 2  # 2: dialogue intervals resample whole conversations (issue 17)


class Judge(Protocol):
    label: str
    identity: dict

    def complete(self, batch: list[R.Messages], layout: Layout) -> list[str]:
        """One reply per prompt; `layout` is the score sheet each reply must hold."""


class Cache(Protocol):
    def judgments(self, hashes: list[str]) -> dict[str, str]: ...

    def put_judgments(self, judge_label: str, replies: dict[str, str]) -> None: ...


@dataclass
class DictCache:
    """In-memory cache (tests, one-off calls); the results store is the persistent one."""

    data: dict = field(default_factory=dict)

    def judgments(self, hashes):
        return {h: self.data[h] for h in hashes if h in self.data}

    def put_judgments(self, judge_label, replies):
        self.data.update(replies)


@dataclass(frozen=True)
class Request:
    """One answer to judge: the material it responds to, and a reference (None: grade alone)."""

    material: str
    answer: str
    reference: str | None = None


@dataclass(frozen=True)
class Verdict:
    scores: dict[str, float]  # aspect -> the answer's score (mean over the parsed orders)
    reference_scores: dict[str, float]
    unparsed: int  # judgments (orders) that stayed unreadable after the retry
    disagreement: float  # 1 when the two orders prefer different answers; nan if not both read
    replies: tuple[str, ...]


def from_spec(spec: str, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
              scoring: str | None = None, **kw) -> Judge:
    """'local:NAME' (a model kickbench can load) or an endpoint URL with `model`. scoring:
    "expected" (local judges' default) or "generate" (the only one an endpoint offers)."""
    if spec.startswith("local:"):
        return LocalJudge(spec.removeprefix("local:"), scoring=scoring or "expected", **kw)
    if spec.startswith(("http://", "https://")):
        if not model:
            raise ValueError("an HTTP judge needs a model name (--judge-model)")
        if scoring not in (None, "generate"):
            raise ValueError(f"judge scoring {scoring!r} needs a local judge; an endpoint "
                             "judge generates its reply (scoring generate)")
        return HTTPJudge(spec, model, api_key_env=api_key_env, **kw)
    raise ValueError(f"unknown judge {redact_url(spec)!r}; use local:<model> or an http(s):// "
                     "endpoint")


def prompt_hash(judge: Judge, messages: R.Messages) -> str:
    blob = json.dumps({"judge": judge.identity, "messages": messages}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def complete_cached(judge: Judge, batch: list[R.Messages], cache: Cache, layout: Layout) -> list[str]:
    """Replies for every prompt; only prompts never asked before reach the judge."""
    hashes = [prompt_hash(judge, m) for m in batch]
    known = cache.judgments(list(dict.fromkeys(hashes)))
    todo = {h: m for h, m in zip(hashes, batch) if h not in known}
    if todo:
        fresh = dict(zip(todo, judge.complete(list(todo.values()), layout)))
        cache.put_judgments(judge.label, fresh)
        known.update(fresh)
    return [known[h] for h in hashes]


def assess(judge: Judge, rubric: R.Rubric, requests: list[Request], cache: Cache) -> list[Verdict]:
    """Judge every request: pairwise with its reference in both orders, or graded alone."""
    asks = []  # (request index, answer position: 0 first / 1 second / None single, messages)
    for i, q in enumerate(requests):
        if q.reference is None:
            asks.append((i, None, R.single(rubric, q.material, q.answer)))
        else:
            asks.append((i, 1, R.pairwise(rubric, q.material, q.reference, q.answer)))
            asks.append((i, 0, R.pairwise(rubric, q.material, q.answer, q.reference)))
    replies = _ask(judge, rubric, [m for *_, m in asks], [pos is not None for _, pos, _ in asks], cache)
    parsed = [R.parse(r, rubric, pos is not None) for r, (_, pos, _) in zip(replies, asks)]
    retry = [k for k, p in enumerate(parsed) if p is None]
    if retry:
        strict = [R.stricter(asks[k][2], rubric, asks[k][1] is not None) for k in retry]
        for k, reply in zip(retry, _ask(judge, rubric, strict, [asks[k][1] is not None for k in retry], cache)):
            replies[k] += "\n[retry]\n" + reply
            parsed[k] = R.parse(reply, rubric, asks[k][1] is not None)
    return [_verdict(rubric, [(a[1], p, r) for a, p, r in zip(asks, parsed, replies) if a[0] == i])
            for i in range(len(requests))]


def _ask(judge: Judge, rubric: R.Rubric, batch: list[R.Messages], pairs: list[bool], cache: Cache):
    """Replies in order; pairwise and single prompts go to the judge as two batches (two layouts)."""
    replies = [""] * len(batch)
    for pair in (True, False):
        idx = [k for k, p in enumerate(pairs) if p == pair]
        if idx:
            layout = Layout(len(rubric.aspects), 2 if pair else 1)
            for k, r in zip(idx, complete_cached(judge, [batch[k] for k in idx], cache, layout)):
                replies[k] = r
    return replies


def _verdict(rubric: R.Rubric, orders) -> Verdict:
    mine, ref, prefs = [], [], []
    for pos, scores, _ in orders:
        if scores is None:
            continue
        if pos is None:
            mine.append([s[0] for s in scores])
            continue
        mine.append([s[pos] for s in scores])
        ref.append([s[1 - pos] for s in scores])
        prefs.append(np.sign(np.mean(mine[-1]) - np.mean(ref[-1])))
    return Verdict(_per_aspect(rubric, mine), _per_aspect(rubric, ref), sum(s is None for _, s, _ in orders),
                   float(prefs[0] != prefs[1]) if len(prefs) == 2 else float("nan"),
                   tuple(r for *_, r in orders))


def _per_aspect(rubric: R.Rubric, rows: list[list[float]]) -> dict[str, float]:
    """Mean score per aspect over the parsed orders; nan when none was parsed."""
    means = np.mean(rows, 0).tolist() if rows else [float("nan")] * len(rubric.aspects)
    return dict(zip(rubric.aspects, means))


def sample_metrics(rubric: R.Rubric, verdicts: list[Verdict]) -> dict[str, float]:
    """One sample's judge metrics (a sample may hold several judged turns): the aspects, their
    mean, the reference's mean, the win rate against the reference (ties 0.5), unparsed count
    and order disagreement."""
    nan = float("nan")

    def avg(values):
        values = [v for v in values if not np.isnan(v)]
        return float(np.mean(values)) if values else nan

    out = {a: avg([v.scores[a] for v in verdicts]) for a in rubric.aspects}
    out["judge_score"] = avg([np.mean(list(v.scores.values())) for v in verdicts])
    out["reference_score"] = avg([np.mean(list(v.reference_scores.values())) for v in verdicts])
    wins = [0.5 + 0.5 * np.sign(np.mean(list(v.scores.values())) - np.mean(list(v.reference_scores.values())))
            for v in verdicts]
    out["win_rate"] = avg(wins)
    out["unparsed"] = float(sum(v.unparsed for v in verdicts))
    out["order_disagreement"] = avg([v.disagreement for v in verdicts])
    return out


POSITION_BIASED = 0.5  # a judge that ranks answers, not places, rarely flips with the order


def order_warning(label: str, disagreement: float) -> str | None:
    """A warning when a judge's two orders disagree on most answers: it is rating the position."""
    if not disagreement >= POSITION_BIASED:  # nan (nothing pairwise) passes too
        return None
    return (f"warning ({label}): the judge's two orders prefer different answers for "
            f"{disagreement:.0%} of the answers; it rates the position more than the answer, so "
            "its scores do not rank answers (use a capable judge: --judge URL --judge-model NAME)")


__all__ = ["Judge", "HTTPJudge", "LocalJudge", "JudgeError", "Layout", "Request", "Verdict", "assess",
           "from_spec", "order_warning", "sample_metrics", "complete_cached", "DictCache", "PROTOCOL_VERSION"]
