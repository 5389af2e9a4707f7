"""Shared fixtures: offline models loaded once per session, temporary warehouses."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def tiny_llama():
    from pvdata.models import load_model

    return load_model("tiny-random-llama", device="cpu")


@pytest.fixture(scope="session")
def tiny_qwen2():
    from pvdata.models import load_model

    return load_model("tiny-random-qwen2", device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    from pvdata.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def dash(tmp_path_factory: pytest.TempPathFactory, tiny_llama):
    """The dashboard tests' warehouse (tests/dashboard_fixture.py), built once per session."""
    from dashboard_fixture import build_once

    base = tmp_path_factory.getbasetemp() / "dashboard"
    base.mkdir(exist_ok=True)
    return build_once(base, tiny_llama)
