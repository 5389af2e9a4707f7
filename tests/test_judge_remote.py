"""The retry policy and the openai judge against the fake server with faults injected."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

import pytest

from pvdata.errors import ConfigError
from pvdata.judge import JudgeFatalError, judge_prompts, make_judge
from pvdata.judge.openai_judge import OpenAIJudge, first_token_top_logprobs
from pvdata.judge.score import aggregate
from pvdata.remote.http import HTTPStatusError, RemoteConnectionError
from pvdata.remote.retry import (
    MalformedResponseError,
    RemoteCallError,
    RetryEvent,
    RetryPolicy,
    classify,
    parse_retry_after,
    with_retries,
)
from pvdata.testing import FakeOpenAIServer, Faults, default_top_logprobs

FAST = RetryPolicy(max_retries=4, base_delay=0.001, max_delay=0.01, max_malformed_retries=2)
TRANSPORTS = ("lean", "sdk")


def expected(prompt: str) -> float | None:
    return aggregate(default_top_logprobs(prompt)).score


def judge_for(server: FakeOpenAIServer, **kw) -> OpenAIJudge:
    kw.setdefault("policy", FAST)
    kw.setdefault("api_key", "test-key")
    return OpenAIJudge("fake-judge", base_url=server.base_url, **kw)


# -- retry policy -----------------------------------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(7.0)
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 60, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_classify() -> None:
    def status(code: int, headers: dict[str, str] | None = None) -> HTTPStatusError:
        return HTTPStatusError(code, headers or {}, b'{"error": {"message": "m"}}')

    assert classify(status(429, {"retry-after": "2"})).retry_after == 2.0
    assert classify(status(429)).kind == "rate_limit"
    assert classify(status(503)).kind == "server" and classify(status(500)).retryable
    assert classify(status(400)).kind == "client" and not classify(status(400)).retryable
    assert classify(status(401)).fatal and "OPENAI_API_KEY" in classify(status(401)).reason
    assert classify(TimeoutError()).kind == "timeout"
    assert classify(RemoteConnectionError("x")).kind == "connection"
    assert classify(MalformedResponseError("no logprobs")).kind == "malformed"
    assert classify(KeyError("bug")).kind == "unknown"


def test_classify_sdk_and_httpx_exceptions() -> None:
    import httpx
    import openai

    req = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    assert classify(httpx.ReadTimeout("t", request=req)).kind == "timeout"
    assert classify(httpx.ConnectError("c", request=req)).kind == "connection"
    resp = httpx.Response(429, headers={"retry-after": "1"}, request=req)
    assert classify(httpx.HTTPStatusError("s", request=req, response=resp)).retry_after == 1.0
    assert classify(openai.APITimeoutError(request=req)).kind == "timeout"  # type: ignore[arg-type]
    assert classify(openai.APIConnectionError(request=req)).kind == "connection"  # type: ignore[arg-type]


def test_with_retries_backoff_and_retry_after() -> None:
    waits: list[float] = []
    events: list[RetryEvent] = []
    errors = [
        HTTPStatusError(429, {"retry-after": "0.5"}, b""),
        HTTPStatusError(503, {}, b""),
        TimeoutError(),
    ]

    async def call() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    async def sleep(d: float) -> None:
        waits.append(d)

    policy = RetryPolicy(max_retries=5, base_delay=1.0, max_delay=3.0)
    out = asyncio.run(with_retries(call, policy, on_retry=events.append, sleep=sleep, rng=random.Random(0)))
    assert out == "ok" and len(waits) == 3
    assert waits[0] == 0.5  # Retry-After wins
    assert 0 <= waits[1] <= 2.0 and 0 <= waits[2] <= 3.0  # full jitter, capped at max_delay
    assert [e.failure.kind for e in events] == ["rate_limit", "server", "timeout"]


def test_with_retries_gives_up() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise HTTPStatusError(500, {}, b"")

    async def nosleep(_: float) -> None:
        return None

    with pytest.raises(RemoteCallError) as err:
        asyncio.run(with_retries(failing, RetryPolicy(max_retries=3), sleep=nosleep))
    assert calls == 4 and err.value.attempts == 4 and "HTTP 500" in str(err.value)

    calls = 0

    async def malformed() -> None:
        nonlocal calls
        calls += 1
        raise MalformedResponseError("no logprobs")

    with pytest.raises(RemoteCallError, match="malformed"):
        asyncio.run(
            with_retries(malformed, RetryPolicy(max_retries=6, max_malformed_retries=2), sleep=nosleep)
        )
    assert calls == 3

    async def client_error() -> None:
        raise HTTPStatusError(400, {}, b"")

    with pytest.raises(RemoteCallError) as err:
        asyncio.run(with_retries(client_error, RetryPolicy(), sleep=nosleep))
    assert err.value.attempts == 1


def test_first_token_top_logprobs_rejects_malformed() -> None:
    good = {
        "choices": [
            {"logprobs": {"content": [{"token": "5", "top_logprobs": [{"token": "5", "logprob": -0.1}]}]}}
        ]
    }
    assert first_token_top_logprobs(good) == [("5", -0.1)]
    for bad, reason in [
        ({}, "no choices"),
        ({"choices": [{"logprobs": None}]}, "no logprobs"),
        ({"choices": [{"logprobs": {"content": []}}]}, "no token"),
        ({"choices": [{"logprobs": {"content": [{"top_logprobs": []}]}}]}, "empty"),
        ({"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "5"}]}]}}]}, "lacks"),
    ]:
        with pytest.raises(MalformedResponseError, match=reason):
            first_token_top_logprobs(bad)


# -- the openai judge against the fake server ------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_openai_judge_scores_and_request_shape(transport: str) -> None:
    seen: list[dict] = []

    def latency(req: dict) -> float:
        seen.append(req)
        return 0.0

    prompts = [f"judge prompt {i}" for i in range(30)]
    with FakeOpenAIServer(latency=latency) as server:
        judge = judge_for(server, concurrency=8, transport=transport)
        results = judge_prompts(judge, prompts)
        assert server.stats()["max_in_flight"] <= 8
    assert [r.score for r in results] == pytest.approx([expected(p) for p in prompts], nan_ok=True)
    assert all(r.error is None and r.valid_mass is not None for r in results)
    assert any(r.score is None and r.refusal for r in results)  # the fake's refusals give null scores
    req = seen[0]
    assert req["messages"] == [{"role": "user", "content": req["messages"][0]["content"]}]
    assert (req["max_tokens"], req["temperature"], req["logprobs"], req["top_logprobs"], req["seed"]) == (
        1,
        0,
        True,
        20,
        0,
    )
    assert judge.stats["requests"] == 30


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_faults_every_item_ends_with_a_score_or_an_error(transport: str) -> None:
    rates = {"429": 0.1, "500": 0.08, "503": 0.05, "timeout": 0.04, "malformed": 0.05, "no_logprobs": 0.05}
    rates["disconnect"] = 0.03
    faults = Faults(rates=rates, seed=1, retry_after="0.01", stall=1.0)
    always_fails = "prompt that always fails"
    prompts = [f"prompt {i}" for i in range(150)] + [always_fails]

    def rule_faults(prompt: str, attempt: int) -> str | None:
        return "500" if prompt == always_fails else None

    with FakeOpenAIServer(faults=faults) as server:
        judge = judge_for(server, concurrency=16, timeout=0.3, transport=transport)
        server.faults.rule = None
        results = judge_prompts(judge, prompts[:-1])
        server.faults.rates = {}
        server.faults.rule = rule_faults
        results += judge_prompts(judge, prompts[-1:])
        stats = server.stats()
    assert len(results) == len(prompts)
    ok = [r for r in results if r.error is None]
    failed = [r for r in results if r.error is not None]
    for p, r in zip(prompts, results, strict=True):
        if r.error is None:
            assert r.valid_mass is not None and r.score == pytest.approx(expected(p), nan_ok=True)
        else:
            assert r.score is None and r.valid_mass is None
    assert results[-1].error is not None and "HTTP 500" in results[-1].error
    assert "after 5 attempts" in results[-1].error
    assert len(ok) + len(failed) == len(prompts) and len(ok) >= 140
    # every attempt counted on both sides (a request whose pooled connection was found closed is resent);
    # an attempt the client gave up on (timeout, dropped connection) may never have reached the server
    sent = judge.stats["requests"] + judge.stats["stale_resends"]
    unreachable = sum(judge.stats[f"{w}_{k}"] for w in ("retry", "error") for k in ("timeout", "connection"))
    assert 0 <= sent - stats["completions"] <= unreachable
    assert judge.stats["retries"] >= 20 and stats["faults"]["timeout"] >= 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retry_after_is_honoured(transport: str) -> None:
    policy = RetryPolicy(max_retries=2, base_delay=0.0, max_delay=0.0)  # no backoff of our own
    with FakeOpenAIServer(faults=Faults(sequence=["429"], retry_after="0.4")) as server:
        judge = judge_for(server, policy=policy, transport=transport)
        t = time.perf_counter()
        (r,) = judge_prompts(judge, ["x"])
        elapsed = time.perf_counter() - t
    assert r.error is None and elapsed >= 0.4 and judge.stats["retry_rate_limit"] == 1


def test_timeouts_are_retried_within_the_deadline() -> None:
    with FakeOpenAIServer(faults=Faults(sequence=["timeout", "timeout"], stall=2.0)) as server:
        judge = judge_for(server, timeout=0.2)
        t = time.perf_counter()
        (r,) = judge_prompts(judge, ["slow"])
        elapsed = time.perf_counter() - t
    # waiting out the two stalls would take >= 4 s; two 0.2 s timeouts take well under that
    assert r.error is None and judge.stats["retry_timeout"] == 2 and elapsed < 4.0


def test_malformed_bodies_retried_a_bounded_number_of_times() -> None:
    faults = Faults(rule=lambda prompt, attempt: "no_logprobs" if prompt == "bad" else None)
    with FakeOpenAIServer(faults=Faults(sequence=["malformed", "no_logprobs"])) as server:
        (r,) = judge_prompts(judge_for(server), ["recovers"])
    assert r.error is None
    with FakeOpenAIServer(faults=faults) as server:
        results = judge_prompts(judge_for(server), ["bad", "good"])
        assert server.prompt_count("bad") == 3  # 1 + max_malformed_retries
    assert results[0].error is not None and "no logprobs" in results[0].error
    assert results[1].error is None


def test_client_errors_are_rows_and_auth_errors_stop_the_job() -> None:
    with FakeOpenAIServer(faults=Faults(sequence=["400"])) as server:
        results = judge_prompts(judge_for(server, concurrency=1), ["too long", "fine"])
        assert server.completions == 2  # a 400 is not retried
    assert "HTTP 400" in (results[0].error or "") and results[1].error is None
    with FakeOpenAIServer(faults=Faults(rates={"401": 1.0})) as server:
        with pytest.raises(JudgeFatalError, match="OPENAI_API_KEY"):
            judge_prompts(judge_for(server), [f"p{i}" for i in range(20)])
        assert server.completions < 20 + 16  # the job stopped instead of failing every prompt


def test_missing_key_names_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        make_judge("openai:gpt-4.1-mini")


def test_make_judge_specs(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    j = make_judge("openai:gpt-4.1-mini", concurrency=7)
    assert j.name == "openai:gpt-4.1-mini" and j.concurrency == 7 and "k" not in repr(j)  # type: ignore[attr-defined]
    assert make_judge("none").name == "none"
    assert make_judge("scripted").name == "scripted"
    assert judge_prompts(make_judge("scripted:80"), ["a"])[0].score == 80.0
    none = judge_prompts(make_judge("none"), ["a", "b"])
    assert all(r.score is None and r.error is None and r.note for r in none)
    for bad in ("", "gpt-4", "openai:", "hf:", "scripted:x", "none:x"):
        with pytest.raises(ConfigError, match=r"openai:<model>|constant"):
            make_judge(bad)
