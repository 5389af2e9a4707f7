"""The OpenAI-compatible generation backend against the loopback fake server (no network)."""

from __future__ import annotations

import pytest

from pvdata.errors import ConfigError
from pvdata.generation import GenerationError, GenerationRequest, SamplingParams, make_backend
from pvdata.generation.openai_compat import OpenAIBackend
from pvdata.remote import RetryPolicy
from pvdata.steering import SteeringSpec
from pvdata.testing.fake_openai import FakeOpenAIServer, Faults

FAST_RETRY = RetryPolicy(max_retries=4, base_delay=0.01, max_delay=0.05)
QUESTIONS = ["What is a cat?", "Why do rivers bend?", "Name a warm colour."]


def _reqs(questions=QUESTIONS):
    return [GenerationRequest.from_question(q, request_id=f"q{i}") for i, q in enumerate(questions)]


def _backend(server, **kwargs):
    return OpenAIBackend("fake-chat", base_url=server.base_url, api_key="test", retry=FAST_RETRY, **kwargs)


def test_n_samples_with_the_n_parameter():
    with FakeOpenAIServer() as server:
        out = _backend(server).generate(_reqs(), SamplingParams(n=3, max_new_tokens=50, seed=1))
        assert server.completions == len(QUESTIONS)  # one request per prompt
    assert [(r.request_index, r.sample_index) for r in out] == [(i, s) for i in range(3) for s in range(3)]
    assert all(r.ok and r.text and r.backend == "openai" for r in out)
    assert len({r.text for r in out[:3]}) == 3
    assert all(r.n_tokens is None for r in out)  # usage is summed over the choices
    assert [r.request_id for r in out[:3]] == ["q0"] * 3


def test_separate_requests_per_sample_with_seeds():
    with FakeOpenAIServer() as server:
        be = _backend(server, server_n=False)
        params = SamplingParams(n=2, max_new_tokens=50, seed=1)
        first = be.generate(_reqs(), params)
        assert server.completions == 2 * len(QUESTIONS)
        again = be.generate(_reqs(), params)
        other = be.generate(_reqs(), SamplingParams(n=2, max_new_tokens=50, seed=2))
    assert [r.text for r in first] == [r.text for r in again]  # the seed is passed on
    assert [r.text for r in first] != [r.text for r in other]
    assert all(isinstance(r.n_tokens, int) and r.n_tokens > 0 for r in first)


def test_max_tokens_and_finish_reason():
    with FakeOpenAIServer() as server:
        out = _backend(server).generate(_reqs(), SamplingParams(max_new_tokens=3))
    assert all(r.finish_reason == "length" and r.n_tokens == 3 for r in out)


def test_greedy_n_sends_one_request_per_prompt():
    with FakeOpenAIServer() as server:
        out = _backend(server).generate(_reqs(), SamplingParams(n=4, temperature=0.0, max_new_tokens=20))
        assert server.completions == len(QUESTIONS)
    assert len(out) == 12 and len({r.text for r in out[:4]}) == 1


def test_transient_faults_are_retried():
    faults = Faults(sequence=["429", "500", "disconnect", "503"], retry_after="0.01")
    with FakeOpenAIServer(faults=faults) as server:
        be = _backend(server, concurrency=1)
        out = be.generate(_reqs(), SamplingParams(max_new_tokens=10))
    assert all(r.ok for r in out)
    # a dropped connection may be re-sent by the transport itself rather than counted as a retry
    assert be.stats.retries in (3, 4) and be.stats.failed_items == 0
    assert be.stats.retry_kinds["rate_limit"] == 1 and be.stats.retry_kinds["server"] == 2


def test_an_item_that_keeps_failing_is_recorded_not_raised():
    faults = Faults(rule=lambda prompt, attempt: "400" if "rivers" in prompt else None)
    with FakeOpenAIServer(faults=faults) as server:
        be = _backend(server)
        out = be.generate(_reqs(), SamplingParams(n=2, max_new_tokens=10))
    bad = [r for r in out if not r.ok]
    assert [(r.request_index, r.finish_reason) for r in bad] == [(1, "error"), (1, "error")]
    assert "400" in (bad[0].error or "")
    assert all(r.ok for r in out if r.request_index != 1)
    assert be.stats.failed_items == 2


def test_retries_exhausted_is_an_item_error():
    faults = Faults(rule=lambda prompt, attempt: "500" if "cat" in prompt else None)
    with FakeOpenAIServer(faults=faults) as server:
        out = _backend(server).generate(_reqs(), SamplingParams(max_new_tokens=10))
    assert not out[0].ok and "after 5 attempts" in (out[0].error or "")
    assert out[1].ok and out[2].ok


def test_a_rejected_key_stops_everything():
    with (
        FakeOpenAIServer(faults=Faults(rates={"401": 1.0})) as server,
        pytest.raises(GenerationError, match="401"),
    ):
        _backend(server).generate(_reqs(), SamplingParams(max_new_tokens=10))


def test_concurrency_limit():
    with FakeOpenAIServer(latency=0.05) as server:
        _backend(server, concurrency=2, server_n=False).generate(
            _reqs(), SamplingParams(n=3, max_new_tokens=5)
        )
        assert server.stats()["max_in_flight"] <= 2


def test_steering_needs_hf_or_vllm():
    spec = SteeringSpec(layers=(3,), coef=2.0)
    with pytest.raises(ConfigError, match="hf or vllm"):
        make_backend("openai:fake-chat", steering=spec, api_key="test")
    with pytest.raises(ConfigError, match="hf or vllm"):
        OpenAIBackend("fake-chat", api_key="test", steering=spec)


def test_prompt_text_is_the_messages_json():
    be = OpenAIBackend("fake-chat", api_key="test")
    assert '"role": "user"' in be.render_prompt(_reqs()[0])


def test_generate_from_inside_an_event_loop():
    import asyncio

    async def inside(be):
        return be.generate(_reqs()[:1], SamplingParams(max_new_tokens=5))  # a notebook's situation

    with FakeOpenAIServer() as server:
        out = asyncio.run(inside(_backend(server)))
    assert out[0].ok
