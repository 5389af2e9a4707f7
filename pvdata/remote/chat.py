"""ChatClient: POST /chat/completions to an OpenAI-compatible server, JSON dict in, JSON dict out.

Two transports behind one method, chosen by `transport`:
- "lean": pvdata.remote.http, about ten times less CPU per request than the SDK (what makes
  hundreds of judgments per second possible in one process).
- "sdk": `openai.AsyncOpenAI` (max_retries=0), for proxies and anything the lean client does not speak.
- "auto" (default): sdk for https:// endpoints (hosted APIs: the SDK is the well-trodden path, and their
  rate limits sit below what it can send) and whenever a proxy variable (HTTPS_PROXY, HTTP_PROXY,
  ALL_PROXY) is set for a non-loopback host; lean for plain http:// endpoints (local vLLM, llama.cpp,
  Ollama servers, where throughput is the point). PVDATA_OPENAI_TRANSPORT overrides the default.

Neither transport retries; wrap calls in pvdata.remote.retry.with_retries. Create and close a ChatClient
inside the event loop that uses it.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from pvdata.errors import ConfigError
from pvdata.remote.client import DEFAULT_TIMEOUT, make_async_client, require_api_key, resolve_base_url
from pvdata.remote.retry import MalformedResponseError

TRANSPORTS = ("auto", "lean", "sdk")
TRANSPORT_ENV = "PVDATA_OPENAI_TRANSPORT"
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def choose_transport(transport: str | None, base_url: str) -> str:
    """The transport "auto" resolves to for this base URL (see the module docstring)."""
    transport = transport or os.environ.get(TRANSPORT_ENV) or "auto"
    if transport not in TRANSPORTS:
        raise ConfigError(f"transport {transport!r} is not valid; use one of {', '.join(TRANSPORTS)}")
    if transport != "auto":
        return transport
    parts = urlsplit(base_url)
    if parts.scheme == "https":
        return "sdk"
    if (parts.hostname or "") not in _LOOPBACK and any(os.environ.get(v) for v in _PROXY_VARS):
        return "sdk"
    return "lean"


def _extra_headers() -> dict[str, str]:
    headers = {"User-Agent": _user_agent()}
    org = os.environ.get("OPENAI_ORG_ID") or os.environ.get("OPENAI_ORGANIZATION")
    if org:
        headers["OpenAI-Organization"] = org
    project = os.environ.get("OPENAI_PROJECT_ID")
    if project:
        headers["OpenAI-Project"] = project
    return headers


def _user_agent() -> str:
    from pvdata import __version__

    return f"pvdata/{__version__}"


class ChatClient:
    """One OpenAI-compatible endpoint. `await complete(payload)` returns the response JSON as a dict."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 256,
        transport: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.transport = choose_transport(transport, self.base_url)
        self.timeout = timeout
        key = api_key if api_key is not None else require_api_key()
        self._lean: Any = None
        self._sdk: Any = None
        if self.transport == "lean":
            from pvdata.remote.http import LeanHTTPClient

            headers = {"Authorization": f"Bearer {key}", **_extra_headers()}
            self._lean = LeanHTTPClient(
                self.base_url, headers=headers, timeout=timeout, max_connections=max_connections
            )
        else:
            self._sdk = make_async_client(
                self.base_url, timeout=timeout, max_connections=max_connections, api_key=key
            )

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient({self.base_url!r}, transport={self.transport!r})"

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()
        if self._sdk is not None:
            await self._sdk.close()

    @property
    def connections_opened(self) -> int | None:
        return self._lean.connections_opened if self._lean is not None else None

    @property
    def stale_resends(self) -> int:
        """Requests the lean transport sent again on a fresh connection (the server had closed the old)."""
        return self._lean.stale_resends if self._lean is not None else 0

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One chat completion; raises what pvdata.remote.retry.classify understands."""
        if self._lean is not None:
            data = await self._lean.post_json("/chat/completions", payload)
        else:
            resp = await self._sdk.chat.completions.create(**payload)
            if isinstance(resp, str | bytes):  # the SDK hands back a body it could not parse as JSON
                raise MalformedResponseError(f"body is not JSON ({str(resp)[:80]!r})")
            data = resp.model_dump(mode="json", exclude_unset=True)
        if not isinstance(data, dict):
            raise MalformedResponseError(f"response is a JSON {type(data).__name__}, not an object")
        return data
