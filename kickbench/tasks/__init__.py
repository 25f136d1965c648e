"""Task families. Each module has NAME, VERSION, KIND, TEMPLATES, SCORINGS (scoring mode ->
metric), METRICS (what each metric is: tasks/metrics.py), HEADLINE (the metric a chart shows)
and load. By KIND: `generate` tasks add GENERATION, prompt and score(item,
prompt, output); `dialogue` tasks are `generate` tasks of several turns (expand(items) makes
one sample per turn, prompt(sample, template, history) sees the earlier answers); `choice`
tasks add requests(item, template, tokenizer) -> {name: Choice}, score(item, results) and
answer_text; `rolling` tasks add default_window and windows. Tasks judged by an LLM add RUBRIC
and judge_request(item, output, history); QA tasks add fluency_context(item) (posthoc.py)."""

from __future__ import annotations

from dataclasses import dataclass

from . import factoid, icraqa, instruct, mmlu, perplexity, summarize
from .metrics import DIVERGENCE, Metric

TASKS = {m.NAME: m for m in (factoid, mmlu, icraqa, perplexity, summarize, instruct)}


def metric(name: str, task: str | None = None) -> Metric:
    """The facts of a metric, from the task that declares it (any task when none is named);
    a metric nobody declares is shown under its own name, higher is better."""
    for module in [TASKS[task]] if task in TASKS else TASKS.values():
        for m in module.METRICS:
            if m.name == name:
                return m
    return next((m for m in DIVERGENCE if m.name == name), Metric(name, name))


def headline(module, template: str | None = None) -> str:
    """The metric a chart shows for a task under a template (HEADLINES overrides HEADLINE)."""
    return getattr(module, "HEADLINES", {}).get(template, module.HEADLINE)


def right_or_wrong(module, template: str | None = None) -> str | None:
    """The 0/1 metric by which a QA task's answers are right or wrong under a template (None:
    no such task): the template's headline where that is 0/1, else the first 0/1 metric."""
    if not hasattr(module, "fluency_context"):
        return None
    first = headline(module, template)
    if any(m.name == first and m.binary for m in module.METRICS):
        return first
    return next((m.name for m in module.METRICS if m.binary), None)


def label(name: str, template: str | None) -> str:
    """How charts and tables name a task: 'icraqa:closed'; the default template adds nothing."""
    default = getattr(TASKS.get(name), "DEFAULT_TEMPLATE", None)
    return name if template in (None, default) else f"{name}:{template}"


def generation_temperature(task: str, temperature: float | None) -> float | None:
    """A report's --temperature applies to its generation tasks only."""
    name = task.partition(":")[0]
    return temperature if name in TASKS and TASKS[name].KIND in ("generate", "dialogue") else None


@dataclass(frozen=True)
class TaskSpec:
    """Which task, on which data (None = the project's set), with which prompt template, on
    how many items (None = Settings.limit). The limit is not part of a result's key: scores
    are stored per number of items, and a larger limit only computes the new items.
    Perplexity only: window (tokens; None = the model's context up to 2048) and stride
    (None = non-overlapping windows). Generation only: temperature (None or 0 = greedy;
    LLM-KICK sampled summaries at 0.7)."""

    name: str = "factoid"
    data: str | None = None
    template: str | None = None
    limit: int | None = None
    window: int | None = None
    stride: int | None = None
    temperature: float | None = None

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; available: {', '.join(TASKS)}")
        module = TASKS[self.name]
        if self.template is not None and self.template not in module.TEMPLATES:
            raise ValueError(f"unknown template {self.template!r} for task {self.name}; "
                             f"available: {', '.join(module.TEMPLATES)}")
        if (self.window or self.stride) and module.KIND != "rolling":
            raise ValueError(f"window/stride apply to the perplexity task, not {self.name}")
        if self.temperature and module.KIND not in ("generate", "dialogue"):
            raise ValueError(f"temperature applies to generation tasks, not {self.name}")
        if self.temperature is not None and not 0 <= self.temperature <= 5:
            raise ValueError(f"temperature must be in 0..5, got {self.temperature}")
        if self.window is not None and self.window < 2:
            raise ValueError(f"window must be >= 2 tokens, got {self.window}")
        if self.stride is not None and not 0 < self.stride <= (self.window or 2**31):
            raise ValueError(f"stride must be in 1..window, got {self.stride}")

    @classmethod
    def parse(cls, text: str, **kw) -> "TaskSpec":
        """'name' or 'name:template' (e.g. icraqa:closed, mmlu:0-shot)."""
        name, _, template = text.partition(":")
        return cls(name.strip(), template=template.strip() or None, **kw)

    @property
    def label(self) -> str:
        """How charts and tables name this task (see `label`)."""
        return label(self.name, self.template_name)

    @property
    def module(self):
        return TASKS[self.name]

    @property
    def headline(self) -> str:
        """The metric charts show for this task and template."""
        return headline(self.module, self.template_name)

    @property
    def template_name(self) -> str:
        return self.template or self.module.DEFAULT_TEMPLATE
