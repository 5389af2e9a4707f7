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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import math
import os
import random
import subprocess as sp
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULT_KINDS = ("429", "500", "503", "400", "401", "timeout", "malformed", "no_logprobs", "disconnect")
DEFAULT_MODELS = ("fake-judge", "fake-chat")

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
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    disconnect: bool = False


class _Core:
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

    async def handle(self, method: str, path: str, body: bytes) -> _Response:
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

    def _count(self, resp: _Response) -> _Response:
        self.status["disconnect" if resp.disconnect else str(resp.status)] += 1
        return resp

    async def _chat(self, body: bytes) -> _Response:
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
            return _Response(0, b"", disconnect=True)
        elif fault in ("429", "500", "503", "400", "401"):
            status = int(fault)
            headers = {}
            if status in (429, 503) and self.faults.retry_after is not None:
                headers["Retry-After"] = self.faults.retry_after
            return _error(status, _FAULT_MESSAGES[status], headers)
        elif fault == "malformed":
            return _Response(200, b'{"id": "chatcmpl-fake", "object": "chat.completion", "choices": [{"ind')
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


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(obj, separators=(",", ":")).encode(), headers or {})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Response:
    kind = (
        "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    )
    return _json(status, {"error": {"message": message, "type": kind, "code": None}}, headers)


async def _serve_connection(core: _Core, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
    core: _Core, host: str, port: int, on_ready: Callable[[int], None], stop: asyncio.Event
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
        self._core = _Core(
            latency=latency, faults=self.faults, top_logprobs_fn=top_logprobs_fn, models=models
        )
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
    core = _Core(
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
