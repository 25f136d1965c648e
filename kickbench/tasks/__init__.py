"""Task families. Each module has NAME, VERSION, KIND, TEMPLATES, SCORINGS and load; `generate`
tasks add GENERATION, prompt and score; `rolling` tasks add WINDOW and windows."""

from __future__ import annotations

from dataclasses import dataclass

from . import factoid, perplexity

TASKS = {factoid.NAME: factoid, perplexity.NAME: perplexity}


@dataclass(frozen=True)
class TaskSpec:
    """Which task, on which data (None = the project's set), with which prompt template, on
    how many items (None = Settings.limit). The limit is not part of a result's key: scores
    are stored per number of items, and a larger limit only computes the new items."""

    name: str = "factoid"
    data: str | None = None
    template: str | None = None
    limit: int | None = None

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; available: {', '.join(TASKS)}")
        module = TASKS[self.name]
        if self.template is not None and self.template not in module.TEMPLATES:
            raise ValueError(f"unknown template {self.template!r} for task {self.name}; "
                             f"available: {', '.join(module.TEMPLATES)}")

    @property
    def module(self):
        return TASKS[self.name]

    @property
    def template_name(self) -> str:
        return self.template or self.module.DEFAULT_TEMPLATE
