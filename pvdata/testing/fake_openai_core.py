"""The fake OpenAI API's request handling: routes, faults, answers and counters, without any HTTP.

`pvdata.testing.fake_openai` serves a `Core` over HTTP/1.1 (in a thread or a subprocess); keeping the
two apart lets each stay readable, and the answers (`default_top_logprobs`, `fake_completion_text`)
are importable on their own to compute what a test should expect.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("429", "500", "503", "400", "401", "timeout", "malformed", "no_logprobs", "disconnect")
DEFAULT_MODELS = ("fake-judge", "fake-chat")

_FAULT_MESSAGES = {
    429: "rate limit reached (fake)",
    500: "server error (fake)",
    503: "service unavailable (fake)",
    400: "bad request (fake): the prompt is too long",
    401: "invalid api key (fake)",
}

_TEXT = (
    "the cat sat on a warm mat while rain fell over quiet hills and the river ran past old stone "
    "bridges toward distant towns where people spoke of weather markets songs and small daily things"
)
_WORDS = tuple(_TEXT.split())

_FILLER = (
    "The", "I", "This", "Based", "As", "Sure", "**", "It", "Here", "A", "My", "In", "To", "An", "We", "On",
)  # fmt: skip


def default_top_logprobs(prompt: str) -> list[tuple[str, float]]:
    """Deterministic top-20 first-token logprobs for a prompt.

    Most prompts put mass 0.5 on a number k (from the prompt's hash), 0.2 on k+10 and 0.1 on " "+(k+20)
    (mod 101), the rest on non-numeric tokens: valid mass 0.8. One prompt in ten is a refusal instead:
    "REFUSAL" with 0.85 and valid mass 0.1, so its score is null.
    """
    h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    k = h % 101
    if h % 10 == 0:
        probs = [("REFUSAL", 0.85), (str(k), 0.1), ("I", 0.02)]
    else:
        probs = [(str(k), 0.5), (str((k + 10) % 101), 0.2), (" " + str((k + 20) % 101), 0.1), ("\n", 0.05)]
    filler = [(tok, 0.004) for tok in _FILLER][: 20 - len(probs)]
    return [(tok, math.log(p)) for tok, p in probs + filler]


def fake_completion_text(
    messages: Sequence[Mapping[str, Any]],
    *,
    index: int = 0,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> tuple[str, int, str]:
    """(text, completion_tokens, finish_reason) the fake answers to a chat request without logprobs.

    One "token" is one word; a natural length of 8..31 words comes from the hash of the messages, seed
    and choice index; finish_reason is "length" when max_tokens cut it short, else "stop".
    """
    key = json.dumps([list(messages), seed, index], sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(key.encode()).digest()
    natural = 8 + digest[0] % 24
    n = natural if max_tokens is None else max(0, min(natural, max_tokens))
    words = [_WORDS[(digest[1 + i % 31] + 7 * i) % len(_WORDS)] for i in range(n)]
    finish = "length" if max_tokens is not None and natural > max_tokens else "stop"
    return " ".join(words), n, finish


@dataclass
class Faults:
    """Which requests fail, and how.

    For each chat completion request, in order: the next entry of `sequence` if any is left (by arrival
    order; None or "ok" = answer normally); else `rule(prompt, attempt)` when given (attempt counts this
    prompt's requests from 1; in-process servers only); else one draw from `rates` ({kind: probability},
    seeded). `retry_after` is the Retry-After header sent with 429 and 503 (seconds as text, an HTTP
    date, or None for no header). A "timeout" fault stalls `stall` seconds before answering normally.
    """

    sequence: Sequence[str | None] = ()
    rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: str | None = "0.05"
    stall: float = 5.0
    rule: Callable[[str, int], str | None] | None = None

    def __post_init__(self) -> None:
        bad = [k for k in [*self.sequence, *self.rates] if k not in (None, "ok", *FAULT_KINDS)]
        if bad:
            raise ValueError(f"unknown fault kind(s) {bad}; kinds: {', '.join(FAULT_KINDS)}")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")

    def to_json(self) -> dict[str, Any]:
        if self.rule is not None:
            raise ValueError("a Faults.rule callable cannot be sent to a subprocess server")
        return {
            "sequence": list(self.sequence),
            "rates": dict(self.rates),
            "seed": self.seed,
            "retry_after": self.retry_after,
            "stall": self.stall,
        }


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    disconnect: bool = False


class Core:
    """Request handling and counters, shared by the thread and subprocess modes."""

    def __init__(
        self,
        *,
        latency: float | Callable[[dict[str, Any]], float],
        faults: Faults,
        top_logprobs_fn: Callable[[str], list[tuple[str, float]]],
        models: Sequence[str],
    ) -> None:
        self.latency = latency
        self.faults = faults
        self.top_logprobs_fn = top_logprobs_fn
        self.models = list(models)
        self._rng = random.Random(faults.seed)
        self._seq_pos = 0
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.completions = 0
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.status: Counter[str] = Counter()
        self.fault_counts: Counter[str] = Counter()
        self.prompts: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completions": self.completions,
            "connections": self.connections,
            "max_in_flight": self.max_in_flight,
            "status": dict(sorted(self.status.items())),
            "faults": dict(sorted(self.fault_counts.items())),
            "distinct_prompts": len(self.prompts),
            "max_requests_per_prompt": max(self.prompts.values(), default=0),
        }

    def _next_fault(self, prompt: str, attempt: int) -> str | None:
        f = self.faults
        if self._seq_pos < len(f.sequence):
            kind = f.sequence[self._seq_pos]
            self._seq_pos += 1
            return None if kind in (None, "ok") else kind
        if f.rule is not None:
            kind = f.rule(prompt, attempt)
            return None if kind in (None, "ok") else kind
        if f.rates:
            x = self._rng.random()
            acc = 0.0
            for kind, rate in f.rates.items():
                acc += rate
                if x < acc:
                    return kind
        return None

    async def handle(self, method: str, path: str, body: bytes) -> Response:
        self.requests += 1
        path = path.split("?", 1)[0]
        if path == "/_fake/stats" and method == "GET":
            return _json(200, self.stats())
        if path.rstrip("/") in ("/v1/models", "/models") and method == "GET":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "pvdata-fake"} for m in self.models
            ]
            return self._count(_json(200, {"object": "list", "data": data}))
        if path.rstrip("/") in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                return self._count(_error(405, "use POST"))
            self.completions += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return self._count(await self._chat(body))
            finally:
                self.in_flight -= 1
        return self._count(_error(404, f"no route {method} {path}"))

    def _count(self, resp: Response) -> Response:
        self.status["disconnect" if resp.disconnect else str(resp.status)] += 1
        return resp

    async def _chat(self, body: bytes) -> Response:
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            return _error(400, "request body is not a JSON object")
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list")
        prompt = _last_user_text(messages)
        self.prompts[prompt] += 1
        fault = self._next_fault(prompt, self.prompts[prompt])
        if fault:
            self.fault_counts[fault] += 1
        delay = self.latency(req) if callable(self.latency) else self.latency
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "timeout":
            await asyncio.sleep(self.faults.stall)
        elif fault == "disconnect":
            return Response(0, b"", disconnect=True)
        elif fault in ("429", "500", "503", "400", "401"):
            status = int(fault)
            headers = {}
            if status in (429, 503) and self.faults.retry_after is not None:
                headers["Retry-After"] = self.faults.retry_after
            return _error(status, _FAULT_MESSAGES[status], headers)
        elif fault == "malformed":
            return Response(200, b'{"id": "chatcmpl-fake", "object": "chat.completion", "choices": [{"ind')
        return _json(200, self._completion(req, prompt, no_logprobs=fault == "no_logprobs"))

    def _completion(self, req: dict[str, Any], prompt: str, *, no_logprobs: bool) -> dict[str, Any]:
        model = str(req.get("model") or self.models[0])
        n = int(req.get("n") or 1)
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        max_tokens = int(max_tokens) if max_tokens is not None else None
        seed = req.get("seed")
        prompt_tokens = sum(len(_content_text(m.get("content")).split()) for m in req["messages"])
        choices = []
        completion_tokens = 0
        if req.get("logprobs"):
            top = sorted(self.top_logprobs_fn(prompt), key=lambda t: -t[1])
            k = max(0, min(int(req.get("top_logprobs") or 0), 20))
            token, logprob = top[0] if top else ("", 0.0)
            entry = {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top[:k]],
            }
            for i in range(n):
                choices.append(
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": token, "refusal": None},
                        "logprobs": None if no_logprobs else {"content": [entry], "refusal": None},
                        "finish_reason": "length" if max_tokens == 1 else "stop",
                    }
                )
                completion_tokens += 1
        else:
            for i in range(n):
                text, ntok, finish = fake_completion_text(
                    req["messages"], index=i, max_tokens=max_tokens, seed=seed
                )
                choices.append(
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                )
                completion_tokens += ntok
        return {
            "id": f"chatcmpl-fake-{self.completions}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_pvdata_fake",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _content_text(m.get("content"))
    return ""


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode(), headers or {})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    kind = (
        "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    )
    return _json(status, {"error": {"message": message, "type": kind, "code": None}}, headers)
