"""A Hugging Face model as the judge (offline), loaded through models.load."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import models
from ..engine import GenerationConfig, generate
from .rubric import Messages


@dataclass
class LocalJudge:
    """Greedy decoding; batches of judge prompts run through the generation engine."""

    name: str = "smollm2-135m"
    max_new_tokens: int = 48  # the score lines; the explanation after them is not needed
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    _lm: models.LoadedModel | None = field(default=None, repr=False)

    @property
    def lm(self) -> models.LoadedModel:
        if self._lm is None:  # its own copy: the evaluated model may be compressed in place
            self._lm = models.load(self.name, device=self.device, dtype=self.dtype)
        return self._lm

    @property
    def label(self) -> str:
        return f"local:{self.name}"

    @property
    def identity(self) -> dict:
        return {"kind": "local", "model": self.lm.fingerprint, "dtype": str(self.lm.dtype),
                "max_new_tokens": self.max_new_tokens}

    def complete(self, batch: list[Messages]) -> list[str]:
        tok = self.lm.tokenizer
        prompts = batch if tok.chat_template else [_plain(m) for m in batch]
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, stop=(), batch_size=self.batch_size)
        return [g.text for g in generate(self.lm.model, tok, prompts, config, progress=False)]


def _plain(messages: Messages) -> str:
    """A base model without a chat template reads the conversation as plain text."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"
