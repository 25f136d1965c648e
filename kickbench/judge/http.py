"""A judge behind any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, llama.cpp
server, Ollama). The API key is read from an environment variable at call time and never
kept in identity, repr, errors or logs. URLs that carry credentials (user:password@, a key in
the query) are refused, and so is a key sent over plain http:// to a host other than this
machine; every message shows the URL through `redact_url`."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import requests

from .rubric import Messages

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# query parameter names that look like they carry a secret (api_key, token, sig, password, ...)
SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session|cookie", re.I)


class JudgeError(RuntimeError):
    """The endpoint could not give an answer (after retries, or a non-retryable status)."""


def _split(url: str):
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
        return parts
    except ValueError:
        return None


def _secret_params(query: str) -> list[str]:
    names = [unquote_plus(p.partition("=")[0]) for p in query.split("&") if p]
    return [n for n in names if SECRET_PARAM.search(n)]


def redact_url(url: str) -> str:
    """The URL fit for messages and identities: no user:password@, the values of secret-looking
    query parameters replaced by ***, no fragment."""
    parts = _split(url)
    if parts is None:
        return "<malformed URL>"
    pairs = [(p.partition("=")[0], p) for p in parts.query.split("&") if p]
    query = "&".join(f"{name}=***" if SECRET_PARAM.search(unquote_plus(name)) else p for name, p in pairs)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, ""))


def is_loopback(host: str | None) -> bool:
    """localhost or a loopback IP literal (names are not resolved: DNS may point anywhere)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """The endpoint URL without a trailing slash; refuses other schemes, a missing host,
    credentials in the URL and fragments (messages show it redacted)."""
    shown = redact_url(url)
    parts = _split(url)
    if parts is None:
        raise ValueError("judge URL is malformed (check its host and port)")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"judge base URL must start with http:// or https://, got {shown!r}")
    if "@" in parts.netloc:
        raise ValueError(f"judge URL {shown!r} has credentials in it (user:password@host); put the "
                         "key in an environment variable and name it with --judge-key-env (it is "
                         "sent as a Bearer token, never stored)")
    if secret := _secret_params(parts.query):
        raise ValueError(f"judge URL {shown!r} carries {', '.join(secret)} in its query; put the "
                         "key in an environment variable and name it with --judge-key-env (it is "
                         "sent as a Bearer token, never stored)")
    if not parts.hostname:
        raise ValueError(f"judge URL {shown!r} has no host")
    if parts.fragment:
        raise ValueError(f"judge URL {shown!r} has a #fragment; give the endpoint's base URL")
    return urlunsplit(parts._replace(path=parts.path.rstrip("/")))


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
        self.base_url = check_url(self.base_url)
        self._check_transport(self._key())

    @property
    def label(self) -> str:
        return self.model

    @property
    def identity(self) -> dict:
        """Everything that changes a judgment; the key is deliberately absent."""
        return {"kind": "http", "base_url": redact_url(self.base_url), "model": self.model,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}

    @property
    def endpoint(self) -> str:
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(path=parts.path + "/chat/completions"))

    def complete(self, batch: list[Messages], layout=None) -> list[str]:
        """Free-text replies; the prompt itself asks for the score layout."""
        return [self._one(m) for m in batch]

    def _key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def _check_transport(self, key: str | None) -> None:
        """A key goes over https, or over plain http to this machine only."""
        parts = urlsplit(self.base_url)
        if key and parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(f"refusing to send the API key in ${self.api_key_env} over plain "
                             f"http:// to {parts.hostname}: https:// is required for a judge on "
                             "another host (an endpoint that needs no key: --judge-key-env '')")

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
        url, shown = self.endpoint, redact_url(self.endpoint)
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, **({"seed": self.seed} if self.seed is not None else {})}
        key = self._key()
        self._check_transport(key)  # the variable may have been set since construction
        headers = {"Authorization": f"Bearer {key}"} if key else {}
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
                raise JudgeError(self._scrub(f"judge {self.model} at {shown}: HTTP {r.status_code}: "
                                             f"{r.text[:300]}"))
            try:
                return r.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                problem, self._retry_after = "malformed response body", None
        raise JudgeError(self._scrub(f"judge {self.model} at {shown}: gave up after "
                                     f"{self.retries + 1} attempts ({problem})"))

    def _delay(self, attempt: int, problem: str) -> float:
        after, self._retry_after = self._retry_after, None
        if after and after.replace(".", "", 1).isdigit():
            return min(float(after), 60.0)
        return self.backoff * 2 ** (attempt - 1)
