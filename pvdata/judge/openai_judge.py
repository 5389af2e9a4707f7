"""The `openai:<model>` judge: one logprob request per prompt to an OpenAI-compatible API.

Request (ALGORITHMS.md §4): one user message = the rendered rubric; max_tokens 1, temperature 0,
logprobs true, top_logprobs 20, seed 0. At most `concurrency` requests are in flight. Each request is
retried by pvdata.remote.retry (429 / 5xx / timeouts / connection errors with backoff and Retry-After;
malformed bodies a bounded number of times); when it still fails the prompt gets an error result, never
an exception, except for failures that would repeat for every prompt (a rejected key, an unknown model),
which stop the job with JudgeFatalError.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pvdata.judge.base import JudgeFatalError, OnResult, collect
from pvdata.judge.score import JudgeResult, TopLogprobs, aggregate
from pvdata.remote.chat import ChatClient, choose_transport
from pvdata.remote.client import API_KEY_ENV, DEFAULT_TIMEOUT, require_api_key, resolve_base_url
from pvdata.remote.retry import MalformedResponseError, RemoteCallError, RetryEvent, RetryPolicy, with_retries

log = logging.getLogger("pvdata.judge")

TOP_LOGPROBS = 20


def judge_request(model: str, prompt: str) -> dict[str, Any]:
    """The chat completion request for one judgment."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
        "seed": 0,
    }


def first_token_top_logprobs(data: Any) -> TopLogprobs:
    """choices[0].logprobs.content[0].top_logprobs as (token, logprob) pairs, or MalformedResponseError."""
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise MalformedResponseError("no choices in the response") from None
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    if not isinstance(logprobs, dict):
        raise MalformedResponseError("no logprobs in the response (choices[0].logprobs is null)")
    content = logprobs.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise MalformedResponseError("no token in choices[0].logprobs.content")
    top = content[0].get("top_logprobs")
    if not isinstance(top, list) or not top:
        raise MalformedResponseError("choices[0].logprobs.content[0].top_logprobs is empty")
    out: TopLogprobs = []
    for entry in top:
        try:
            token, logprob = entry["token"], float(entry["logprob"])
        except (KeyError, TypeError, ValueError):
            raise MalformedResponseError("a top_logprobs entry lacks token or logprob") from None
        if not isinstance(token, str):
            raise MalformedResponseError("a top_logprobs token is not a string")
        out.append((token, logprob))
    return out


class OpenAIJudge:
    """Judge with an OpenAI-compatible chat completions endpoint."""

    batch_hint = 20_000
    cacheable = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        concurrency: int = 64,
        timeout: float = DEFAULT_TIMEOUT,
        policy: RetryPolicy | None = None,
        transport: str | None = None,
        api_key: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = resolve_base_url(base_url)
        self.transport = choose_transport(transport, self.base_url)
        self.concurrency = concurrency
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self._api_key = api_key
        if api_key is None:
            require_api_key()  # fail now, with the variable's name, not after loading everything else
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"OpenAIJudge({self.model!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"

    async def score_many(self, prompts: Sequence[str]) -> list[JudgeResult]:
        return await collect(self.score_each, prompts)

    async def score_each(self, prompts: Sequence[str], on_result: OnResult) -> None:
        """Judge prompts with `concurrency` workers; on_result(i, result) as each one finishes."""
        n = len(prompts)
        if not n:
            return
        client = ChatClient(
            self.base_url,
            timeout=self.timeout,
            max_connections=self.concurrency,
            transport=self.transport,
            api_key=self._api_key,
        )
        indices = iter(range(n))

        async def worker() -> None:
            for i in indices:  # shared iterator: each index goes to exactly one worker
                on_result(i, await self._one(client, prompts[i]))

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.concurrency, n)):
                    group.create_task(worker())
        except (
            BaseExceptionGroup
        ) as group_error:  # surface the first failure itself (a PvdataError stays one)
            first: BaseException = group_error
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        finally:
            self.stats["stale_resends"] += client.stale_resends
            await client.aclose()

    def _scrub(self, text: str) -> str:
        """Error text goes to rows and logs: mask the key should a server ever echo it."""
        from pvdata.warehouse.redact import REDACTED, redact_text

        key = self._api_key or os.environ.get(API_KEY_ENV, "")
        if len(key) >= 4:
            text = text.replace(key, REDACTED)
        return redact_text(text)

    def _on_retry(self, event: RetryEvent) -> None:
        self.stats["retries"] += 1
        self.stats[f"retry_{event.failure.kind}"] += 1
        log.debug("retry %d in %.2fs: %s", event.attempt, event.delay, event.failure.reason)

    async def _one(self, client: ChatClient, prompt: str) -> JudgeResult:
        payload = judge_request(self.model, prompt)

        async def call() -> TopLogprobs:
            self.stats["requests"] += 1
            return first_token_top_logprobs(await client.complete(payload))

        try:
            top = await with_retries(call, self.policy, on_retry=self._on_retry)
        except RemoteCallError as exc:
            if exc.failure.fatal:
                raise JudgeFatalError(self._scrub(f"judge {self.name} at {self.base_url}: {exc}")) from None
            self.stats["errors"] += 1
            self.stats[f"error_{exc.failure.kind}"] += 1
            return JudgeResult.failed(self._scrub(f"{exc.failure.kind}: {exc}"))
        except Exception as exc:  # an SDK error pvdata does not know: one error row, not a crashed run
            self.stats["errors"] += 1
            return JudgeResult.failed(self._scrub(f"unexpected {type(exc).__name__}: {str(exc)[:200]}"))
        return aggregate(top)
