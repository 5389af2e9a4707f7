"""Threshold math against numpy, percentile ranks, top-k ties, reasons, and flag validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvdata.errors import ConfigError
from pvdata.screening import ThresholdSpec, decide, percentile_ranks, percentile_threshold

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(finite, min_size=1, max_size=60), st.lists(finite, min_size=1, max_size=40), st.floats(0, 100)
)
def test_percentile_threshold_flags_exactly_the_scores_above_numpys_percentile(reference, scores, p):
    want = np.percentile(np.array(reference), p)  # linear interpolation, numpy's default
    assert percentile_threshold(reference, p) == pytest.approx(want, rel=1e-12, abs=1e-9)
    result = decide(scores, ThresholdSpec("percentile", p), reference=reference, label="evil L3 exact")
    assert result.threshold == pytest.approx(want, rel=1e-12, abs=1e-9)
    assert [d.flagged for d in result.decisions] == [s > result.threshold for s in scores]
    for s, d in zip(scores, result.decisions, strict=True):
        below = sum(r < s for r in reference) + 0.5 * sum(r == s for r in reference)
        assert d.percentile == pytest.approx(100 * below / len(reference))


def test_the_paper_setting_95th_percentile_of_a_clean_reference():
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 1, 1000)
    data = np.concatenate([rng.normal(0, 1, 95), rng.normal(6, 0.5, 5)])
    result = decide(list(data), ThresholdSpec(), reference=list(clean), label="evil L20 exact")
    assert result.threshold == pytest.approx(np.percentile(clean, 95))
    flagged = [i for i, d in enumerate(result.decisions) if d.flagged]
    assert set(range(95, 100)) <= set(flagged) and len(flagged) < 15
    reason = result.decisions[99].reason or ""
    assert (
        reason.startswith("evil L20 exact: score ") and "95th percentile of the reference, n=1000" in reason
    )
    assert f"{result.threshold:.4g}" in reason
    assert all((d.reason is not None) == d.flagged for d in result.decisions)  # a reason for every flag


def test_without_a_reference_the_dataset_is_its_own_population():
    scores = [float(x) for x in range(1, 21)]
    result = decide(scores, ThresholdSpec("percentile", 90))
    assert result.threshold == pytest.approx(np.percentile(scores, 90))
    assert [i for i, d in enumerate(result.decisions) if d.flagged] == [18, 19]
    assert "of this dataset, n=20" in (result.decisions[19].reason or "")
    np.testing.assert_allclose([d.percentile for d in result.decisions], percentile_ranks(scores, scores))


def test_top_k_breaks_ties_by_input_order_and_skips_unscored():
    scores = [1.0, None, 5.0, 3.0, 5.0, 3.0, float("nan")]
    result = decide(
        scores, ThresholdSpec("top_k", 3), errors=[None, "too long", None, None, None, None, None]
    )
    assert [d.flagged for d in result.decisions] == [False, None, True, True, True, False, None]
    assert result.threshold == 3.0 and result.n_flagged == 3
    assert result.decisions[1].reason == "not scored: too long"
    assert "top 3 of 5 scored samples" in (result.decisions[3].reason or "")
    assert decide([2.0, 1.0], ThresholdSpec("top_k", 10)).n_flagged == 2


def test_absolute_threshold_is_strict():
    result = decide([0.5, 1.0, 1.5], ThresholdSpec("absolute", 1.0), label="evil L3 raw")
    assert [d.flagged for d in result.decisions] == [False, False, True]
    assert result.decisions[2].reason == "evil L3 raw: score 1.5 > threshold 1 (absolute threshold)"


def test_flags_are_validated():
    assert ThresholdSpec.from_flags() == ThresholdSpec("percentile", 95.0)
    assert ThresholdSpec.from_flags(top_k=5) == ThresholdSpec("top_k", 5.0)
    assert ThresholdSpec.from_flags(threshold=-2.5) == ThresholdSpec("absolute", -2.5)
    with pytest.raises(ConfigError, match="--percentile and --top-k were both given"):
        ThresholdSpec.from_flags(percentile=90, top_k=5)
    with pytest.raises(ConfigError, match=r"within 0\.\.100"):
        ThresholdSpec.from_flags(percentile=101)
    with pytest.raises(ConfigError, match="integer >= 1"):
        ThresholdSpec("top_k", 0)
    with pytest.raises(ConfigError, match="at least one scored reference sample"):
        percentile_threshold([], 95)
