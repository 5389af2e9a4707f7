"""Test helpers that ship with pvdata, so other packages' tests and the benchmarks can use them."""

from pvdata.testing.fake_openai import (
    FAULT_KINDS,
    FakeOpenAIServer,
    Faults,
    default_top_logprobs,
    fake_completion_text,
)

__all__ = ["FAULT_KINDS", "FakeOpenAIServer", "Faults", "default_top_logprobs", "fake_completion_text"]
