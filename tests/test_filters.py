"""Extraction filters: independent (paper), joint by explicit keys, none; thresholds and reasons."""

from __future__ import annotations

import pytest

from pvdata.errors import ConfigError
from pvdata.pipelines.filters import Candidate, FilterConfig, apply_filter


def _c(gid, pol, trait, coh, q=0, i=0, s=0):
    return Candidate(gid, pol, trait, coh, {"question_id": q, "instruction_index": i, "sample_index": s})


CANDS = [
    _c("p1", "pos", 80, 90, q=1),
    _c("n1", "neg", 10, 90, q=1),
    _c("p2", "pos", 40, 90, q=2),  # pos not evil enough
    _c("n2", "neg", 5, 90, q=2),
    _c("p3", "pos", 95, 20, q=3),  # incoherent
    _c("n3", "neg", 60, 90, q=3),  # neg too evil
    _c("p4", "pos", None, 90, q=4),  # null score
    _c("n4", "neg", 0, 80, q=4),
]


def test_paper_filter_is_independent_per_side():
    kept = {d.generation_id for d in apply_filter(CANDS, FilterConfig()) if d.keep}
    assert kept == {"p1", "n1", "n2", "n4"}


def test_joint_filter_needs_both_partners():
    decisions = {d.generation_id: d for d in apply_filter(CANDS, FilterConfig(mode="joint"))}
    assert {g for g, d in decisions.items() if d.keep} == {"p1", "n1"}
    assert decisions["n2"].reason.startswith("partner dropped: pos trait score 40.0")


def test_joint_pairs_by_keys_not_by_row_order():
    shuffled = [CANDS[1], CANDS[3], CANDS[0], CANDS[2]]
    kept = {d.generation_id for d in apply_filter(shuffled, FilterConfig(mode="joint")) if d.keep}
    assert kept == {"p1", "n1"}


def test_none_keeps_everything_and_thresholds_move():
    assert all(d.keep for d in apply_filter(CANDS, FilterConfig(mode="none")))
    kept = {
        d.generation_id for d in apply_filter(CANDS, FilterConfig(threshold=30, coherence_min=10)) if d.keep
    }
    assert kept == {"p1", "n1", "p2", "n2", "p3", "n4"}


def test_threshold_is_strict():
    at = [_c("p", "pos", 50, 90), _c("n", "neg", 50, 90, s=1)]
    assert not any(d.keep for d in apply_filter(at, FilterConfig()))


def test_reasons_and_errors():
    decisions = {d.generation_id: d.reason for d in apply_filter(CANDS, FilterConfig())}
    assert "coherence 20.0 < 50" in decisions["p3"]
    assert "null" in decisions["p4"]
    with pytest.raises(ConfigError, match="valid filters are paper, joint, none"):
        FilterConfig(mode="strict")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="use --filter none"):
        apply_filter([_c("p", "pos", None, None)], FilterConfig())
    with pytest.raises(ConfigError, match="two pos rollouts"):
        apply_filter([_c("a", "pos", 90, 90), _c("b", "pos", 90, 90)], FilterConfig(mode="joint"))
