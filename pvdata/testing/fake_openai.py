"""A loopback fake of the OpenAI chat completions API, for tests and benchmarks without a network.

    with FakeOpenAIServer(latency=0.05, faults=Faults(sequence=["429", None, "500"])) as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
        ...
        assert server.stats()["completions"] == 3

It is a small HTTP/1.1 server on the stdlib asyncio streams (keep-alive, Content-Length bodies), so it
sustains hundreds of concurrent connections. It runs in a background thread (default) or, with
`subprocess=True`, in its own process so it does not share the client's GIL (what the benchmark uses).

Endpoints:
- POST /v1/chat/completions: with `logprobs` it answers one token whose top logprobs come from
  `top_logprobs_fn(prompt)` (default `default_top_logprobs`: deterministic in the prompt, so the expected
  judge score is computable); without, a deterministic text from `fake_completion_text`, honouring `n`,
  `max_tokens` / `max_completion_tokens` and `seed`, with `finish_reason` and `usage`.
  The prompt is the content of the last user message.
- GET /v1/models: the configured model names. GET /_fake/stats: the counters as JSON.

Faults (see Faults): 429 (with Retry-After), 500, 503, 400, 401, timeout (the server stalls before answering),
malformed (a 200 with a truncated JSON body), no_logprobs (valid JSON with logprobs null), disconnect
(the connection is closed without an answer).

This module is the HTTP layer and the server's lifecycle; the request handling behind it (`Core`,
`Faults`, the answers) is in pvdata.testing.fake_openai_core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import subprocess as sp
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pvdata.testing.fake_openai_core import (
    DEFAULT_MODELS,
    FAULT_KINDS,
    Core,
    Faults,
    default_top_logprobs,
    fake_completion_text,
)

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_KINDS",
    "FakeOpenAIServer",
    "Faults",
    "default_top_logprobs",
    "fake_completion_text",
    "main",
]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


async def _serve_connection(core: Core, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve HTTP/1.1 requests on one connection until the client closes it or asks to."""
    core.connections += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head[:-4].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            try:
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                return
            resp = await core.handle(method, target, body)
            if resp.disconnect:
                return
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            head_lines = [
                f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Status')}",
                "Content-Type: application/json",
                f"Content-Length: {len(resp.body)}",
                f"Connection: {'keep-alive' if keep_alive else 'close'}",
                *(f"{k}: {v}" for k, v in resp.headers.items()),
            ]
            writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1") + resp.body)
            try:
                await writer.drain()
            except ConnectionError:
                return
            if not keep_alive:
                return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    for _ in range(1 << 20):  # bounded: a body of at most a million chunks
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
    raise ValueError("too many chunks")


async def _serve(
    core: Core, host: str, port: int, on_ready: Callable[[int], None], stop: asyncio.Event
) -> None:
    tasks: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            await _serve_connection(core, reader, writer)
        except asyncio.CancelledError:
            pass  # the server is stopping; ending normally keeps asyncio from logging the cancellation
        finally:
            if task is not None:
                tasks.discard(task)

    server = await asyncio.start_server(on_connect, host, port, limit=1 << 22, backlog=4096)
    on_ready(server.sockets[0].getsockname()[1])
    try:
        await stop.wait()
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


class FakeOpenAIServer:
    """The fake server; a context manager that starts it on entry and stops it on exit."""

    def __init__(
        self,
        *,
        latency: float | Callable[[dict[str, Any]], float] = 0.0,
        faults: Faults | None = None,
        top_logprobs_fn: Callable[[str], list[tuple[str, float]]] = default_top_logprobs,
        models: Sequence[str] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        port: int = 0,
        subprocess: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self.faults = faults or Faults()
        self.host = host
        self.port = port
        self.subprocess = subprocess
        self.start_timeout = start_timeout
        if subprocess:
            if callable(latency) or top_logprobs_fn is not default_top_logprobs:
                raise ValueError("a subprocess server takes a fixed latency and the default scoring rule")
            self._config = {"latency": latency, "faults": self.faults.to_json(), "models": list(models)}
        self._core = Core(latency=latency, faults=self.faults, top_logprobs_fn=top_logprobs_fn, models=models)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._proc: sp.Popen[str] | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        if self.subprocess:
            self._start_process()
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        ready = threading.Event()

        def on_ready(port: int) -> None:
            self.port = port
            ready.set()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stop = asyncio.Event()
            try:
                loop.run_until_complete(_serve(self._core, self.host, self.port, on_ready, self._stop))
            except BaseException as exc:
                self._error = exc
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(self.start_timeout) or self._error is not None:
            raise RuntimeError(f"fake OpenAI server did not start: {self._error!r}")

    def _start_process(self) -> None:
        import pvdata

        env = dict(os.environ)
        src = str(Path(pvdata.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [
            sys.executable,
            "-m",
            "pvdata.testing.fake_openai",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--config",
            json.dumps(self._config),
        ]
        self._proc = sp.Popen(cmd, stdout=sp.PIPE, stderr=sp.DEVNULL, text=True, env=env)
        line = _readline_with_timeout(self._proc, self.start_timeout)
        if not line.startswith("LISTENING "):
            self._kill_process()
            raise RuntimeError(f"fake OpenAI server subprocess did not start (said {line!r})")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self._proc is not None:
            self._kill_process()
        if self._thread is not None and self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
            self._thread = None

    def _kill_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except sp.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counters ----------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters: requests (all), completions (chat requests), status counts, faults, prompts, ..."""
        if self._proc is not None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request("GET", "/_fake/stats")
                return dict(json.loads(conn.getresponse().read()))
            finally:
                conn.close()
        return self._core.stats()

    @property
    def completions(self) -> int:
        """Chat completion requests received so far."""
        return int(self.stats()["completions"])

    def prompt_count(self, prompt: str) -> int:
        """How many requests carried this prompt (in-process servers only)."""
        return self._core.prompts[prompt]

    def reset_stats(self) -> None:
        """Zero the counters (in-process servers only)."""
        if self.subprocess:
            raise RuntimeError("reset_stats works on in-process servers only")
        self._core.reset()


def _readline_with_timeout(proc: sp.Popen[str], timeout: float) -> str:
    out: list[str] = []

    def read() -> None:
        if proc.stdout is not None:
            out.append(proc.stdout.readline())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    return out[0].strip() if out else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run a fake server in the foreground (what subprocess mode starts); prints LISTENING <port>."""
    parser = argparse.ArgumentParser(prog="python -m pvdata.testing.fake_openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=None)
    parser.add_argument("--config", default="{}", help="JSON: latency, faults, models")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    latency = args.latency if args.latency is not None else float(cfg.get("latency", 0.0))
    core = Core(
        latency=latency,
        faults=Faults(**cfg.get("faults", {})),
        top_logprobs_fn=default_top_logprobs,
        models=cfg.get("models", DEFAULT_MODELS),
    )

    def on_ready(port: int) -> None:
        print(f"LISTENING {port}", flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await _serve(core, args.host, args.port, on_ready, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
