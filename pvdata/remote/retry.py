"""Retry policy for remote calls (judges, OpenAI-compatible generation): ours, not the SDK's.

A failure is classified once (`classify`) into a kind:

- rate_limit (HTTP 429), server (5xx, 408, 409), timeout, connection: transient, retried up to
  `max_retries` times with exponential backoff and full jitter, uniform(0, min(max_delay,
  base_delay * 2**attempt)). A server-sent Retry-After (seconds or an HTTP date) or retry-after-ms
  header wins over the jittered delay (capped at `max_retry_after`).
- malformed (a 200 whose body is not JSON or lacks what we asked for): retried too, but at most
  `max_malformed_retries` times, because a server that answers malformed usually keeps doing so.
- fatal (401, 403, 404: wrong key, no access, unknown model): not retried, and `fatal` is set so the
  caller can stop the whole job instead of recording the same error for every item.
- client (other 4xx, e.g. a prompt too long for the context): not retried, recorded per item.

Exceptions from openai, httpx and httpx2 are recognised by class name along the MRO, so this module
imports none of them.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

TRANSIENT = frozenset({"rate_limit", "server", "timeout", "connection"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; the defaults suit a paid API shared with other jobs."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    max_malformed_retries: int = 2

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_malformed_retries < 0:
            raise ValueError("max_retries and max_malformed_retries must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must be >= 0")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay before retry number attempt+1 (attempt counts from 0)."""
        cap = min(self.max_delay, self.base_delay * (2 ** min(attempt, 62)))
        return (rng or random).uniform(0.0, cap)


@dataclass(frozen=True)
class Failure:
    """What went wrong with one attempt, in words fit for an error row (never containing the key)."""

    kind: str  # rate_limit | server | timeout | connection | malformed | client | fatal | unknown
    reason: str
    status: int | None = None
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in TRANSIENT or self.kind == "malformed"

    @property
    def fatal(self) -> bool:
        return self.kind == "fatal"


class MalformedResponseError(Exception):
    """Raised by a caller's response parser: the body lacks what was asked for (retried, bounded)."""


class RemoteCallError(Exception):
    """The call failed for good: retries exhausted, or a failure that is not retried."""

    def __init__(self, failure: Failure, attempts: int) -> None:
        self.failure = failure
        self.attempts = attempts
        tail = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{failure.reason}{tail}")


@dataclass(frozen=True)
class RetryEvent:
    """Passed to on_retry before each wait: for counters and logs."""

    attempt: int  # the attempt that failed, from 1
    failure: Failure
    delay: float


def parse_retry_after(headers: Mapping[str, str] | Any, now: float | None = None) -> float | None:
    """Seconds to wait from retry-after-ms, or Retry-After as seconds or an HTTP date; None if absent."""
    if headers is None:
        return None
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except (TypeError, ValueError):
            pass
    raw = get("retry-after")
    if raw is None:
        return None
    text = str(raw).strip()
    try:
        seconds = float(text)
        return seconds if seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _is_http_lib(exc: BaseException) -> bool:
    return any(c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore") for c in type(exc).__mro__)


def _status_failure(status: int, headers: Any, detail: str) -> Failure:
    retry_after = parse_retry_after(headers)
    if status == 429:
        return Failure("rate_limit", f"HTTP 429 rate limited{detail}", status, retry_after)
    if status >= 500 or status in (408, 409):
        return Failure("server", f"HTTP {status} server error{detail}", status, retry_after)
    if status in (401, 403):
        return Failure(
            "fatal",
            # the server's text is left out: some servers echo part of the key in it
            f"HTTP {status}: the server rejected the credentials; check OPENAI_API_KEY (and OPENAI_BASE_URL)",
            status,
        )
    if status == 404:
        return Failure(
            "fatal",
            f"HTTP 404: unknown model or endpoint; check the model name and OPENAI_BASE_URL{detail}",
            status,
        )
    return Failure("client", f"HTTP {status} request rejected{detail}", status)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


def classify(exc: BaseException) -> Failure:
    """Map an exception from openai, httpx/httpx2, asyncio or the OS to a Failure."""
    names = _names(exc)
    if isinstance(exc, MalformedResponseError):
        return Failure("malformed", f"malformed response: {_short(str(exc))}")
    if "APITimeoutError" in names or (_is_http_lib(exc) and "TimeoutException" in names):
        return Failure("timeout", "request timed out")
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11
        return Failure("timeout", "request timed out")
    if "APIStatusError" in names or "HTTPStatusError" in names:
        response = getattr(exc, "response", None)
        status = getattr(exc, "status_code", None) or getattr(response, "status_code", None) or 0
        message = getattr(exc, "message", None) or ""
        detail = f": {_short(message)}" if message else ""
        return _status_failure(int(status), getattr(response, "headers", None), detail)
    if "APIResponseValidationError" in names or "JSONDecodeError" in names:
        return Failure("malformed", f"malformed response: {_short(str(exc))}")
    if "APIConnectionError" in names or (_is_http_lib(exc) and "TransportError" in names):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__})" if cause is not None else ""
        return Failure("connection", f"connection error{detail}")
    if "SSLCertVerificationError" in names:
        return Failure("fatal", f"TLS certificate verification failed: {_short(str(exc))}")
    if isinstance(exc, ConnectionError | OSError):
        return Failure("connection", f"connection error ({type(exc).__name__})")
    return Failure("unknown", f"{type(exc).__name__}: {_short(str(exc))}")


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[RetryEvent], None] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Await call() until it succeeds; raise RemoteCallError when it fails for good.

    Cancellation is never swallowed; an unclassified exception (a bug) propagates unchanged.
    """
    attempt = 0
    malformed = 0
    while True:
        attempt += 1
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure.kind == "unknown":
                raise
            if failure.kind == "malformed":
                malformed += 1
                give_up = malformed > policy.max_malformed_retries
            else:
                give_up = not failure.retryable
            if give_up or attempt > policy.max_retries:
                raise RemoteCallError(failure, attempt) from exc
            if failure.retry_after is not None:
                delay = min(failure.retry_after, policy.max_retry_after)
            else:
                delay = policy.backoff(attempt - 1, rng)
            if on_retry is not None:
                on_retry(RetryEvent(attempt, failure, delay))
            await sleep(delay)
