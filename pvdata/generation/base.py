"""The one interface every generation backend implements, and the values that cross it.

Kept free of torch, transformers and openai so configs, the CLI and tests can build requests and
sampling parameters without loading anything heavy.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pvdata.errors import ConfigError, DataError, PvdataError

Message = Mapping[str, str]
FinishReason = Literal["stop", "length", "error"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "error")
ROLES: tuple[str, ...] = ("system", "user", "assistant")


class GenerationError(PvdataError):
    """Generation could not go on (a server refused every request, items failed after retries)."""


def _check_messages(messages: Sequence[Message]) -> tuple[dict[str, str], ...]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise DataError("a generation request needs a non-empty list of chat messages")
    out: list[dict[str, str]] = []
    for k, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise DataError(
                f"message {k} is a {type(msg).__name__}, expected {{'role': ..., 'content': ...}}"
            )
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise DataError(f"message {k} has role {role!r}: valid roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"message {k} has content {content!r}: expected a string")
        out.append({"role": role, "content": content})
    if out[-1]["role"] == "assistant":
        raise DataError("the last message is from the assistant: a prompt must end with a user turn")
    return tuple(out)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: chat messages (everything before the answer) and an optional caller id."""

    messages: tuple[dict[str, str], ...]
    request_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", _check_messages(self.messages))

    @classmethod
    def from_question(
        cls, question: str, *, system: str | None = None, request_id: str | None = None
    ) -> GenerationRequest:
        msgs = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": question})
        return cls(tuple(msgs), request_id)

    @property
    def system_prompt(self) -> str | None:
        return next((m["content"] for m in self.messages if m["role"] == "system"), None)

    @property
    def question(self) -> str:
        """The last user turn: what the answer responds to."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample (ALGORITHMS.md section 3).

    temperature None means the paper's default: 1.0 when n > 1, else greedy (0.0). top_p 1 keeps the
    whole distribution. Every answer gets at least one token. `seed` with the prompt and the
    sample index determines a sampled answer (see each backend for what exactly is guaranteed).
    """

    n: int = 1
    temperature: float | None = None
    top_p: float = 1.0
    max_new_tokens: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"n = {self.n!r}: the number of samples per prompt must be an integer >= 1")
        if self.temperature is None:
            object.__setattr__(self, "temperature", 1.0 if self.n > 1 else 0.0)
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ConfigError(f"temperature = {t!r}: give a finite number >= 0 (0 = greedy)")
        object.__setattr__(self, "temperature", float(t))
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
            raise ConfigError(f"top_p = {p!r}: give a number in (0, 1] (1 = the whole distribution)")
        object.__setattr__(self, "top_p", float(p))
        m = self.max_new_tokens
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ConfigError(f"max_new_tokens = {m!r}: give an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed = {self.seed!r}: give an integer")

    @property
    def greedy(self) -> bool:
        return self.temp == 0.0

    @property
    def temp(self) -> float:
        """The resolved temperature (never None after construction)."""
        return float(self.temperature or 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "temperature": self.temp,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class GenerationResult:
    """One sampled answer. finish_reason "error" means the item failed; `error` says why.

    n_tokens counts generated tokens including the end-of-turn token an answer stopped on; None when
    the backend cannot know it (an OpenAI-compatible server answering n > 1 choices in one request).
    """

    request_index: int
    sample_index: int
    text: str
    n_tokens: int | None
    finish_reason: FinishReason
    backend: str
    request_id: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return self.finish_reason != "error"


@runtime_checkable
class GenerationBackend(Protocol):
    """Anything that turns chat prompts into answers.

    `generate` returns one result per (request, sample) in (request, sample) order. `render_prompt`
    gives the text the model is conditioned on (for the generations.prompt_text column).
    """

    name: str
    model_id: str

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GenerationResult]: ...

    def render_prompt(self, request: GenerationRequest) -> str: ...


def sample_seed(seed: int, prompt_key: Any, sample_index: int) -> int:
    """A 63-bit seed for one (seed, prompt, sample) so a sample does not depend on its batch-mates."""
    blob = json.dumps([seed, prompt_key, sample_index], separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big") >> 1


def error_results(
    requests: Sequence[GenerationRequest], params: SamplingParams, backend: str, message: str
) -> list[GenerationResult]:
    """Every (request, sample) marked failed with the same message."""
    return [
        GenerationResult(i, s, "", 0, "error", backend, request_id=r.request_id, error=message)
        for i, r in enumerate(requests)
        for s in range(params.n)
    ]
