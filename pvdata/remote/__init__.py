"""Remote OpenAI-compatible endpoints, shared by the judge and the OpenAI-compatible generation backend.

- ChatClient(base_url=None, timeout=..., max_connections=..., transport="auto"): `await
  client.complete(payload) -> dict` (the response JSON), over the lean HTTP client or the openai SDK.
- make_async_client(...): a configured `openai.AsyncOpenAI` (SDK retries off).
- with_retries(call, RetryPolicy(), on_retry=...): the one retry policy (429/5xx/timeouts/connection
  errors with backoff and Retry-After; malformed bodies a bounded number of times).

Importing this package does not import openai.
"""

from pvdata.remote.chat import TRANSPORTS, ChatClient, choose_transport
from pvdata.remote.client import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    make_async_client,
    require_api_key,
    resolve_base_url,
)
from pvdata.remote.http import HTTPStatusError, LeanHTTPClient, RemoteConnectionError
from pvdata.remote.retry import (
    Failure,
    MalformedResponseError,
    RemoteCallError,
    RetryEvent,
    RetryPolicy,
    classify,
    parse_retry_after,
    with_retries,
)

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "TRANSPORTS",
    "ChatClient",
    "Failure",
    "HTTPStatusError",
    "LeanHTTPClient",
    "MalformedResponseError",
    "RemoteCallError",
    "RemoteConnectionError",
    "RetryEvent",
    "RetryPolicy",
    "choose_transport",
    "classify",
    "make_async_client",
    "parse_retry_after",
    "require_api_key",
    "resolve_base_url",
    "with_retries",
]
