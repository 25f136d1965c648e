"""A judge behind any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, llama.cpp
server, Ollama). The API key is read from an environment variable at call time and never
kept in identity, repr, errors or logs."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import requests

from .rubric import Messages

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class JudgeError(RuntimeError):
    """The endpoint could not give an answer (after retries, or a non-retryable status)."""


@dataclass
class HTTPJudge:
    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = 0  # sent when not None (OpenAI, vLLM and llama.cpp honour it)
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0  # seconds; doubles per retry (Retry-After wins when given)
    requests_per_minute: float | None = None
    _last: float = field(default=0.0, repr=False)
    _retry_after: str | None = field(default=None, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self):
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base URL must start with http:// or https://, got {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")

    @property
    def label(self) -> str:
        return self.model

    @property
    def identity(self) -> dict:
        """Everything that changes a judgment; the key is deliberately absent."""
        return {"kind": "http", "base_url": self.base_url, "model": self.model,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}

    def complete(self, batch: list[Messages], layout=None) -> list[str]:
        """Free-text replies; the prompt itself asks for the score layout."""
        return [self._one(m) for m in batch]

    def _key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def _scrub(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    def _wait_turn(self) -> None:
        if self.requests_per_minute:
            gap = 60.0 / self.requests_per_minute - (time.monotonic() - self._last)
            if gap > 0:
                time.sleep(gap)
        self._last = time.monotonic()

    def _one(self, messages: Messages) -> str:
        url = f"{self.base_url}/chat/completions"
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, **({"seed": self.seed} if self.seed is not None else {})}
        headers = {"Authorization": f"Bearer {k}"} if (k := self._key()) else {}
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, problem))
            self._wait_turn()
            try:
                r = self._session.post(url, json=body, headers=headers, timeout=self.timeout)
            except requests.RequestException as e:  # connection refused, timeout
                problem, self._retry_after = type(e).__name__, None
                continue
            if r.status_code in RETRY_STATUS:
                problem = f"HTTP {r.status_code}"
                self._retry_after = r.headers.get("Retry-After")
                continue
            if r.status_code != 200:
                raise JudgeError(self._scrub(f"judge {self.model} at {url}: HTTP {r.status_code}: "
                                             f"{r.text[:300]}"))
            try:
                return r.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                problem, self._retry_after = "malformed response body", None
        raise JudgeError(self._scrub(f"judge {self.model} at {url}: gave up after "
                                     f"{self.retries + 1} attempts ({problem})"))

    def _delay(self, attempt: int, problem: str) -> float:
        after, self._retry_after = self._retry_after, None
        if after and after.replace(".", "", 1).isdigit():
            return min(float(after), 60.0)
        return self.backoff * 2 ** (attempt - 1)
