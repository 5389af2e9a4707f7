"""The OpenAI-compatible async client, configured from the standard environment variables.

OPENAI_API_KEY is required (any non-empty value for servers that ignore it, e.g. a local vLLM);
OPENAI_BASE_URL is optional (default https://api.openai.com/v1). The key is read here and handed to the
SDK only: pvdata never logs it, stores it in a config or run row, or puts it in an error message. The
SDK's own retries are disabled (max_retries=0) because pvdata.remote.retry is the one retry policy.
"""

from __future__ import annotations

import os
from typing import Any

from pvdata.errors import ConfigError, MissingExtraError

API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 30.0


def resolve_base_url(base_url: str | None = None) -> str:
    """The explicit base URL, else $OPENAI_BASE_URL, else the OpenAI API."""
    return (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def require_api_key(env: str = API_KEY_ENV) -> str:
    """The API key from the environment, or a ConfigError that names the variable to set."""
    key = os.environ.get(env, "").strip()
    if not key:
        raise ConfigError(
            f"the environment variable {env} is not set; set it to your API key (export {env}=...). "
            f"For a local OpenAI-compatible server that needs no key, set it to any value, e.g. {env}=EMPTY, "
            f"and point {BASE_URL_ENV} at the server"
        )
    return key


def import_openai() -> Any:
    try:
        import openai
    except ModuleNotFoundError:
        raise MissingExtraError("openai", "judge") from None
    return openai


def make_async_client(
    base_url: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_connections: int = 256,
    api_key: str | None = None,
) -> Any:
    """An `openai.AsyncOpenAI` with our timeout, a pool sized for our concurrency, and no SDK retries.

    api_key defaults to $OPENAI_API_KEY (required). Create it inside the event loop that will use it
    and close it there (`await client.close()`), since its connections belong to that loop.
    """
    openai = import_openai()
    key = api_key if api_key is not None else require_api_key()
    limits_cls = type(openai.DEFAULT_CONNECTION_LIMITS)
    limits = limits_cls(
        max_connections=max(max_connections, 1),
        max_keepalive_connections=max(max_connections, 1),
        keepalive_expiry=30.0,
    )
    http_client = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
    return openai.AsyncOpenAI(
        api_key=key,
        base_url=resolve_base_url(base_url),
        timeout=timeout,
        max_retries=0,
        http_client=http_client,
    )
