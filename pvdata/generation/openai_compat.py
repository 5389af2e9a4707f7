"""Generation from any OpenAI-compatible chat server (vLLM's server, llama.cpp, Ollama, OpenAI...).

Requests go out concurrently (at most `concurrency` in flight) through pvdata.remote's ChatClient and
are retried with the shared RetryPolicy (429/5xx/timeouts with backoff, jitter and Retry-After). A
request that still fails is recorded on its items (finish_reason "error" and the reason) and the others
go on; a fatal failure (bad key, unknown model) stops the whole call, since every item would fail the
same way.

Samples: with `server_n=True` one request asks for `n` choices (the `n` parameter); servers that ignore
`n` (llama.cpp, Ollama) need `server_n=False`, which sends one request per sample, each with its own
seed derived from (seed, messages, sample_index) and exact token counts. A server that returns fewer
choices than asked is reported per item with that advice. Greedy (temperature 0) sends one request per
prompt and copies the answer. The server renders the chat template and decides the stop tokens; "at
least one token" cannot be enforced through the standard API (vLLM's server accepts `min_tokens`
through `extra_body`). Seeds are honoured only by servers that support them.

Steering and LoRA loading need the model in this process: use the hf or vllm backend.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pvdata.errors import ConfigError
from pvdata.generation.base import (
    FinishReason,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    sample_seed,
)

__all__ = ["OpenAIBackend", "OpenAIStats"]

STEERING_ERROR = (
    "steering needs the hf or vllm backend: an OpenAI-compatible server runs the model in another "
    "process and cannot be steered; pass --backend hf or --backend vllm"
)


@dataclass
class OpenAIStats:
    """Counters of the last generate call (requests sent, retries, items failed)."""

    requests: int = 0
    retries: int = 0
    failed_items: int = 0
    retry_kinds: dict[str, int] = field(default_factory=dict)


def _server_seed(seed: int, messages: Any, sample_index: int) -> int:
    """A 31-bit seed: some servers (llama.cpp) take only 32-bit seeds."""
    return sample_seed(seed, messages, sample_index) % (2**31)


class OpenAIBackend:
    """Chat completions against one model of one OpenAI-compatible server (unsteered only)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        concurrency: int = 16,
        server_n: bool = True,
        retry: Any = None,
        timeout: float | None = None,
        transport: str | None = None,
        api_key: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        steering: Any = None,
    ) -> None:
        if steering is not None:
            raise ConfigError(STEERING_ERROR)
        if not model:
            raise ConfigError("the openai backend needs a model name: --backend openai:MODEL")
        if concurrency < 1:
            raise ConfigError(f"concurrency {concurrency} must be >= 1")
        from pvdata.remote import DEFAULT_TIMEOUT, RetryPolicy, require_api_key, resolve_base_url

        self.model_id = model
        self.adapter: str | None = None
        self.steering = None
        self.base_url = resolve_base_url(base_url)
        self.api_key = api_key if api_key is not None else require_api_key()
        self.concurrency = concurrency
        self.server_n = server_n
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
        self.transport = transport
        self.extra_body = dict(extra_body or {})
        self.stats = OpenAIStats()

    def render_prompt(self, request: GenerationRequest) -> str:
        """The server renders the chat template, so the prompt is recorded as the messages' JSON."""
        return json.dumps(list(request.messages), ensure_ascii=False)

    # -- requests -------------------------------------------------------------------------------------------

    def _payload(
        self, request: GenerationRequest, params: SamplingParams, n: int, seed: int
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_id,
            "messages": list(request.messages),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temp,
            "top_p": params.top_p,
            "seed": seed,
        }
        if n > 1:
            payload["n"] = n
        payload.update(self.extra_body)
        return payload

    def _jobs(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[tuple[int, list[int], int]]:
        """(request index, sample indices answered by the request, seed) per HTTP request."""
        jobs: list[tuple[int, list[int], int]] = []
        for i, req in enumerate(requests):
            msgs = list(req.messages)
            if params.greedy:
                jobs.append((i, [0], _server_seed(params.seed, msgs, 0)))
            elif self.server_n:
                jobs.append((i, list(range(params.n)), _server_seed(params.seed, msgs, 0)))
            else:
                jobs.extend((i, [s], _server_seed(params.seed, msgs, s)) for s in range(params.n))
        return jobs

    async def agenerate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GenerationResult]:
        """The async form of generate (call it from inside a running event loop)."""
        from pvdata.remote import ChatClient, RemoteCallError, RetryEvent, with_retries

        self.stats = OpenAIStats()
        jobs = self._jobs(requests, params)
        sem = asyncio.Semaphore(self.concurrency)
        found: dict[tuple[int, int], GenerationResult] = {}
        fatal: list[str] = []

        def on_retry(event: RetryEvent) -> None:
            self.stats.retries += 1
            kinds = self.stats.retry_kinds
            kinds[event.failure.kind] = kinds.get(event.failure.kind, 0) + 1

        async with ChatClient(
            self.base_url,
            timeout=self.timeout,
            max_connections=self.concurrency,
            transport=self.transport,
            api_key=self.api_key,
        ) as client:

            async def one(job: tuple[int, list[int], int]) -> None:
                i, samples, seed = job
                req = requests[i]
                payload = self._payload(req, params, len(samples), seed)
                try:
                    async with sem:
                        if fatal:
                            raise asyncio.CancelledError
                        self.stats.requests += 1
                        data = await with_retries(
                            lambda: client.complete(payload), self.retry, on_retry=on_retry
                        )
                    parsed = self._parse(data, i, samples, req.request_id)
                except RemoteCallError as exc:
                    if exc.failure.fatal:
                        fatal.append(str(exc))
                    parsed = [self._error(i, s, req.request_id, str(exc)) for s in samples]
                except asyncio.CancelledError:
                    parsed = [self._error(i, s, req.request_id, "not sent: " + fatal[0]) for s in samples]
                for result in parsed:
                    found[(i, result.sample_index)] = result

            await asyncio.gather(*(one(job) for job in jobs))
        if fatal:
            raise GenerationError(f"the server at {self.base_url} refused the requests: {fatal[0]}")
        results: list[GenerationResult] = []
        for i in range(len(requests)):
            for s in range(params.n):
                got = found[(i, 0 if params.greedy else s)]
                if got.sample_index != s:
                    from dataclasses import replace

                    got = replace(got, sample_index=s)
                results.append(got)
        self.stats.failed_items = sum(1 for r in results if not r.ok)
        return results

    def _error(self, i: int, s: int, request_id: str | None, message: str) -> GenerationResult:
        return GenerationResult(i, s, "", 0, "error", self.name, request_id=request_id, error=message)

    def _parse(
        self, data: Mapping[str, Any], i: int, samples: list[int], request_id: str | None
    ) -> list[GenerationResult]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return [self._error(i, s, request_id, "malformed response: no choices") for s in samples]
        if len(choices) < len(samples):
            msg = (
                f"the server returned {len(choices)} choice(s) for n={len(samples)}: it does not support the "
                "n parameter; use separate requests per sample (--no-server-n)"
            )
            return [self._error(i, s, request_id, msg) for s in samples]
        usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
        total = usage.get("completion_tokens") if isinstance(usage, Mapping) else None
        out: list[GenerationResult] = []
        ordered = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, Mapping) else 0)
        for s, choice in zip(samples, ordered, strict=False):
            message = choice.get("message") if isinstance(choice, Mapping) else None
            content = message.get("content") if isinstance(message, Mapping) else None
            if not isinstance(content, str):
                out.append(self._error(i, s, request_id, "malformed response: a choice without text content"))
                continue
            raw_reason = choice.get("finish_reason")
            reason: FinishReason = "length" if raw_reason == "length" else "stop"
            # usage counts all choices together: exact per answer only when there is one
            n_tokens = int(total) if isinstance(total, int) and len(samples) == 1 else None
            out.append(
                GenerationResult(
                    request_index=i,
                    sample_index=s,
                    text=content,
                    n_tokens=n_tokens,
                    finish_reason=reason,
                    backend=self.name,
                    request_id=request_id,
                    extra={"server_finish_reason": raw_reason}
                    if raw_reason not in ("stop", "length")
                    else {},
                )
            )
        return out

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GenerationResult]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests, params))
        # called from inside an event loop (a notebook): run ours in a thread
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = asyncio.run(self.agenerate(requests, params))
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=target, name="pvdata-openai-generate")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return list(box["value"])
