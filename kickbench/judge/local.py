"""A Hugging Face model as the judge (offline), loaded through models.load."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import models
from ..engine import GenerationConfig, generate
from .expected import Layout, SheetReader, sheet_text
from .rubric import Messages

SCORINGS = ("expected", "generate")


@dataclass
class LocalJudge:
    """scoring="expected": the reply's format is forced and each score is the judge's expected
    value over 1-10 (expected.py; always readable). scoring="generate": greedy free text,
    batched through the generation engine, parsed like an HTTP judge's reply."""

    name: str = "smollm2-135m"
    scoring: str = "expected"
    max_new_tokens: int = 48  # generate: the score lines; the explanation after them is not needed
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    _lm: models.LoadedModel | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.scoring not in SCORINGS:
            raise ValueError(f"judge scoring {self.scoring!r}: use one of {', '.join(SCORINGS)}")

    @property
    def lm(self) -> models.LoadedModel:
        if self._lm is None:  # its own copy: the evaluated model may be compressed in place
            self._lm = models.load(self.name, device=self.device, dtype=self.dtype)
        return self._lm

    @property
    def label(self) -> str:
        return f"local:{self.name}" + (":generate" if self.scoring == "generate" else "")

    @property
    def identity(self) -> dict:
        out = {"kind": "local", "model": self.lm.fingerprint, "dtype": str(self.lm.dtype)}
        if self.scoring == "generate":  # as before expected scoring existed: cached replies stay valid
            return {**out, "max_new_tokens": self.max_new_tokens}
        return {**out, "scoring": self.scoring}

    def complete(self, batch: list[Messages], layout: Layout) -> list[str]:
        tok = self.lm.tokenizer
        prompts = batch if tok.chat_template else [_plain(m) for m in batch]
        if self.scoring == "expected":
            reader = SheetReader(self.lm.model, tok, first_separator="" if tok.chat_template else " ")
            return [sheet_text(s) for s in reader.read(prompts, layout)]
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, stop=(), batch_size=self.batch_size)
        return [g.text for g in generate(self.lm.model, tok, prompts, config, progress=False)]


def _plain(messages: Messages) -> str:
    """A base model without a chat template reads the conversation as plain text."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"
