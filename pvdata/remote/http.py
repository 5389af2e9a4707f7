"""A lean async HTTP/1.1 JSON client: the fast transport for OpenAI-compatible endpoints.

Why it exists: the openai SDK (with httpx2, httpcore2 and anyio underneath) spends 2-4 ms of CPU per
request, so one process tops out near 250 small requests/s however many are in flight. This client
speaks only what those endpoints need: keep-alive connections from a bounded pool, TLS with certificate
and host-name checks (the system's default context), Content-Length, chunked and close-delimited
bodies, gzip/deflate, and JSON in and out. It does not do proxies or HTTP/2: with a proxy variable set,
`ChatClient` falls back to the SDK (see pvdata.remote.chat).

Errors map onto pvdata.remote.retry: HTTPStatusError (status >= 400, with headers for Retry-After),
RemoteConnectionError, TimeoutError (the per-request deadline), MalformedResponseError (a 2xx whose
body is not JSON).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pvdata.remote.retry import MalformedResponseError

_MAX_HEADERS = 256
_MAX_LINE = 1 << 16
_STREAM_LIMIT = 1 << 20


class RemoteConnectionError(ConnectionError):
    """The connection failed or the server broke the HTTP exchange."""


class _StaleConnection(RemoteConnectionError):
    """A reused keep-alive connection was closed by the server before any response byte arrived."""


@dataclass(frozen=True)
class HTTPResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class HTTPStatusError(Exception):
    """An HTTP error status; `message` is the server's error text when its body says one."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status_code = status
        self.headers = dict(headers)
        self.response = HTTPResponse(status, self.headers, body)
        self.message = _error_message(body)
        super().__init__(f"HTTP {status}" + (f": {self.message}" if self.message else ""))


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", errors="replace").strip()
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    return ""


class _Conn:
    __slots__ = ("last_used", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    def usable(self, keepalive_expiry: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and time.monotonic() - self.last_used < keepalive_expiry
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class LeanHTTPClient:
    """JSON over HTTP/1.1 to one base URL, with at most max_connections open connections.

    Create and close it inside the event loop that uses it (`async with LeanHTTPClient(...)`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        max_connections: int = 256,
        keepalive_expiry: float = 20.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http(s)://host[:port][/path], got scheme {parts.scheme!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        default_port = (parts.scheme == "https" and self.port == 443) or (
            parts.scheme == "http" and self.port == 80
        )
        host_header = self.host if ":" not in self.host else f"[{self.host}]"
        self._host_header = host_header if default_port else f"{host_header}:{self.port}"
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._headers = dict(headers or {})
        self.timeout = timeout
        self.keepalive_expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max(1, max_connections))
        self._idle: collections.deque[_Conn] = collections.deque()
        self._closed = False
        self.connections_opened = 0
        self.stale_resends = 0  # requests sent again because a pooled connection turned out closed

    async def __aenter__(self) -> LeanHTTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    # -- public --------------------------------------------------------------------------------------------

    async def post_json(self, path: str, payload: Any, *, timeout: float | None = None) -> Any:
        """POST a JSON body; the parsed JSON reply, or HTTPStatusError / MalformedResponseError."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return _json_or_raise(await self.request("POST", path, body, timeout=timeout))

    async def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        return _json_or_raise(await self.request("GET", path, None, timeout=timeout))

    async def request(
        self, method: str, path: str, body: bytes | None, *, timeout: float | None = None
    ) -> HTTPResponse:
        """One request under one deadline (connecting, sending and reading the whole reply)."""
        if self._closed:
            raise RuntimeError("the HTTP client is closed")
        head = self._head(method, path, body)
        async with self._slots, asyncio.timeout(self.timeout if timeout is None else timeout):
            # the deadline starts once a connection slot is ours: queueing for one is not the server's fault
            for _ in range(3):  # a stale pooled connection is replaced, a bounded number of times
                conn, reused = await self._connection()
                try:
                    conn.writer.write(head + body if body else head)
                    await conn.writer.drain()
                    resp, keep = await _read_response(conn.reader, method)
                except _StaleConnection:
                    conn.close()
                    if reused:
                        self.stale_resends += 1
                        continue
                    raise
                except (OSError, EOFError, asyncio.LimitOverrunError, ValueError, zlib.error) as e:
                    conn.close()
                    raise RemoteConnectionError(f"{type(e).__name__}: {e}") from e
                except BaseException:
                    conn.close()  # cancelled or timed out mid-exchange: the connection state is unknown
                    raise
                if keep and not self._closed:
                    conn.last_used = time.monotonic()
                    self._idle.append(conn)
                else:
                    conn.close()
                return resp
            raise RemoteConnectionError("the server closed every pooled connection")

    # -- internals ----------------------------------------------------------------------------------------

    def _head(self, method: str, path: str, body: bytes | None) -> bytes:
        target = self.base_path + (path if path.startswith("/") else "/" + path)
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self._host_header}",
            "Accept: application/json",
            "Accept-Encoding: gzip, deflate",
            "Connection: keep-alive",
            *(f"{k}: {v}" for k, v in self._headers.items()),
        ]
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    async def _connection(self) -> tuple[_Conn, bool]:
        while self._idle:
            conn = self._idle.pop()  # most recently used first: it is the least likely to be stale
            if conn.usable(self.keepalive_expiry):
                return conn, True
            conn.close()
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl else None,
                limit=_STREAM_LIMIT,
            )
        except ssl.SSLCertVerificationError:
            raise
        except OSError as e:
            raise RemoteConnectionError(
                f"cannot connect to {self.host}:{self.port} ({e.strerror or e})"
            ) from e
        self.connections_opened += 1
        return _Conn(reader, writer), False


def _json_or_raise(resp: HTTPResponse) -> Any:
    if resp.status >= 400:
        raise HTTPStatusError(resp.status, resp.headers, resp.body)
    try:
        return json.loads(resp.body)
    except ValueError:
        snippet = resp.body[:80].decode("utf-8", errors="replace")
        raise MalformedResponseError(f"HTTP {resp.status} body is not JSON ({snippet!r})") from None


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\n")
    if len(line) > _MAX_LINE:
        raise ValueError("header line too long")
    return line


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[HTTPResponse, bool]:
    for _ in range(10):  # skip interim 1xx responses, a bounded number of them
        try:
            status_line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise _StaleConnection("connection closed before the response") from None
            raise
        parts = status_line.decode("latin-1").strip().split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"not an HTTP status line: {status_line[:60]!r}")
        version, status = parts[0], int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = await _read_line(reader)
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                key = name.strip().lower()
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        else:
            raise ValueError("too many response headers")
        if 100 <= status < 200:
            continue
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()  # delimited by the server closing the connection
            keep = False
        encoding = headers.get("content-encoding", "identity").lower().strip()
        if encoding in ("gzip", "x-gzip"):
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif encoding not in ("identity", ""):
            raise ValueError(f"unsupported content-encoding {encoding!r}")
        return HTTPResponse(status, headers, body), keep
    raise ValueError("too many interim (1xx) responses")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    for _ in range(1 << 20):
        size_line = await _read_line(reader)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            for _ in range(_MAX_HEADERS):  # trailers, then the blank line
                if await _read_line(reader) in (b"\r\n", b"\n"):
                    return bytes(out)
            raise ValueError("too many trailer lines")
        out += await reader.readexactly(size)
        await reader.readexactly(2)
    raise ValueError("too many chunks")
