"""The loopback fake OpenAI server: answers, faults, counters, keep-alive, subprocess mode."""

from __future__ import annotations

import asyncio
import http.client
import json
from typing import Any

import pytest

from pvdata.judge.score import aggregate
from pvdata.remote.http import HTTPStatusError, LeanHTTPClient, RemoteConnectionError
from pvdata.remote.retry import MalformedResponseError
from pvdata.testing import FakeOpenAIServer, Faults, default_top_logprobs, fake_completion_text


def post(server: FakeOpenAIServer, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def judge_body(prompt: str) -> dict[str, Any]:
    return {
        "model": "fake-judge",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 20,
        "seed": 0,
    }


def test_logprob_answer_follows_the_scoring_rule() -> None:
    with FakeOpenAIServer() as server:
        status, _, raw = post(server, judge_body("rate this"))
        assert status == 200
        data = json.loads(raw)
        entry = data["choices"][0]["logprobs"]["content"][0]
        top = [(e["token"], e["logprob"]) for e in entry["top_logprobs"]]
        assert len(top) == 20 and top == sorted(default_top_logprobs("rate this"), key=lambda t: -t[1])
        assert aggregate(top).score == aggregate(default_top_logprobs("rate this")).score
        assert data["choices"][0]["finish_reason"] == "length"
        assert server.stats()["completions"] == 1 and server.prompt_count("rate this") == 1


def test_default_rule_has_valid_and_null_prompts() -> None:
    scores = [aggregate(default_top_logprobs(f"p{i}")).score for i in range(200)]
    nulls = sum(s is None for s in scores)
    assert 5 <= nulls <= 40  # about one prompt in ten is a refusal with a null score
    assert all(0 <= s <= 100 for s in scores if s is not None)


def test_text_answers_honour_n_max_tokens_and_seed() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    with FakeOpenAIServer() as server:
        status, _, raw = post(
            server, {"model": "fake-chat", "messages": msgs, "n": 3, "max_tokens": 5, "seed": 1}
        )
        data = json.loads(raw)
    assert status == 200 and len(data["choices"]) == 3
    total = 0
    for i, choice in enumerate(data["choices"]):
        text, ntok, finish = fake_completion_text(msgs, index=i, max_tokens=5, seed=1)
        assert choice["message"]["content"] == text and choice["finish_reason"] == finish
        assert len(text.split()) == ntok <= 5
        total += ntok
    assert data["usage"]["completion_tokens"] == total
    assert finish == "length"  # natural answers are 8..31 words
    full, n, stop = fake_completion_text(msgs, max_tokens=None)
    assert stop == "stop" and 8 <= n <= 31 and full.startswith(fake_completion_text(msgs, max_tokens=5)[0])


def test_fault_sequence_statuses_and_retry_after() -> None:
    faults = Faults(sequence=["429", "500", "503", "malformed", "no_logprobs", None], retry_after="2")
    with FakeOpenAIServer(faults=faults) as server:
        got = [post(server, judge_body("x")) for _ in range(6)]
        stats = server.stats()
    assert [g[0] for g in got] == [429, 500, 503, 200, 200, 200]
    assert got[0][1]["retry-after"] == "2" and got[2][1]["retry-after"] == "2"
    assert "retry-after" not in got[1][1]
    with pytest.raises(ValueError):
        json.loads(got[3][2])
    assert json.loads(got[4][2])["choices"][0]["logprobs"] is None
    assert stats["status"] == {"200": 3, "429": 1, "500": 1, "503": 1}
    assert stats["faults"] == {"429": 1, "500": 1, "503": 1, "malformed": 1, "no_logprobs": 1}
    assert stats["completions"] == 6 and stats["max_requests_per_prompt"] == 6


def test_models_endpoint_and_unknown_fault_kind() -> None:
    with FakeOpenAIServer(models=["a", "b"]) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/v1/models")
        data = json.loads(conn.getresponse().read())
        conn.close()
    assert [m["id"] for m in data["data"]] == ["a", "b"]
    with pytest.raises(ValueError, match="unknown fault"):
        Faults(sequence=["418"])


def test_lean_client_keep_alive_errors_and_disconnects() -> None:
    faults = Faults(sequence=[None, None, "500", "malformed", "disconnect", "disconnect", None])

    async def go(base_url: str) -> dict[str, Any]:
        async with LeanHTTPClient(base_url, headers={"Authorization": "Bearer k"}, max_connections=1) as c:
            ok1 = await c.post_json("/chat/completions", judge_body("a"))
            ok2 = await c.post_json("/chat/completions", judge_body("b"))
            with pytest.raises(HTTPStatusError) as err:
                await c.post_json("/chat/completions", judge_body("c"))
            with pytest.raises(MalformedResponseError):
                await c.post_json("/chat/completions", judge_body("d"))
            # a reused connection closed without an answer looks stale: it is retried once on a fresh
            # connection; a fresh connection closed without an answer is an error
            with pytest.raises(RemoteConnectionError):
                await c.post_json("/chat/completions", judge_body("e"))
            ok3 = await c.post_json("/chat/completions", judge_body("f"))
            return {"ok": [ok1, ok2, ok3], "err": err.value, "opened": c.connections_opened}

    with FakeOpenAIServer(faults=faults) as server:
        out = asyncio.run(go(server.base_url))
        stats = server.stats()
    assert all(o["choices"][0]["logprobs"] for o in out["ok"])
    assert out["err"].status_code == 500 and "server error" in out["err"].message
    assert out["opened"] == 3  # one connection reused until the server dropped it, twice
    assert stats["connections"] == 3 and stats["status"]["disconnect"] == 2


def test_high_concurrency_reaches_64_connections_in_flight() -> None:
    """64 concurrent keep-alive connections at 20 ms latency: the client really runs 64 requests at once.

    The rate itself is measured by `pvdata bench judge`, not asserted here (no timed assertions).
    """

    async def go(base_url: str, n: int) -> int:
        async with LeanHTTPClient(base_url, max_connections=64) as c:
            sem = asyncio.Semaphore(64)
            done = 0

            async def one(i: int) -> None:
                nonlocal done
                async with sem:
                    await c.post_json("/chat/completions", judge_body(f"p{i}"))
                    done += 1

            await asyncio.gather(*(one(i) for i in range(n)))
            return done

    with FakeOpenAIServer(latency=0.02) as server:
        done = asyncio.run(go(server.base_url, 640))
        stats = server.stats()
    assert done == 640
    assert stats["max_in_flight"] == 64 and stats["connections"] <= 64


def test_subprocess_mode_counts_requests() -> None:
    with FakeOpenAIServer(subprocess=True, faults=Faults(sequence=["429"])) as server:
        assert post(server, judge_body("a"))[0] == 429
        assert post(server, judge_body("a"))[0] == 200
        stats = server.stats()
    assert stats["completions"] == 2 and stats["status"] == {"200": 1, "429": 1}
    with pytest.raises(ValueError):
        FakeOpenAIServer(subprocess=True, latency=lambda req: 0.0)
