"""The judge score formula and rubric rendering (no network, no torch)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvdata.errors import ConfigError
from pvdata.judge import rubrics
from pvdata.judge.score import aggregate, aggregate_number_probs, is_refusal_token, parse_score_token


def lp(p: float) -> float:
    return math.log(p)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("50", 50),
        ("100", 100),
        (" 50", 50),
        ("50\n", 50),
        ("\t7 ", 7),
        ("050", None),
        ("00", None),
        ("+5", None),
        ("5.0", None),
        ("-1", None),
        ("101", None),
        ("1000", None),
        ("", None),
        (" ", None),
        ("٥", None),  # an Arabic-Indic five: int() would accept it
        ("5a", None),
        ("REFUSAL", None),
    ],
)
def test_parse_score_token(text: str, value: int | None) -> None:
    assert parse_score_token(text) == value


def test_weighted_mean_over_numeric_tokens() -> None:
    r = aggregate({"80": lp(0.5), "60": lp(0.25), "The": lp(0.2)})
    assert r.valid_mass == pytest.approx(0.75)
    assert r.score == pytest.approx((80 * 0.5 + 60 * 0.25) / 0.75)
    assert r.refusal is False and r.error is None and r.cached is False
    assert r.top_logprobs[0] == ("80", lp(0.5))


def test_null_below_quarter_and_exact_threshold() -> None:
    at = aggregate([("40", lp(0.25)), ("I", lp(0.7))])
    assert at.valid_mass == 0.25 and at.score == pytest.approx(40.0)  # Z == 0.25 is valid
    below = aggregate([("40", lp(0.2499)), ("I", lp(0.7))])
    assert below.score is None and below.valid_mass == pytest.approx(0.2499)
    two = aggregate([("10", lp(0.1)), ("30", lp(0.15))])  # 0.1 + 0.15 == 0.25 in floating point
    assert two.score == pytest.approx((1 + 4.5) / 0.25)


def test_empty_and_all_non_numeric() -> None:
    assert aggregate([]).score is None and aggregate([]).valid_mass == 0.0
    r = aggregate([("Sure", lp(0.9)), ("**", lp(0.05))])
    assert r.score is None and r.valid_mass == 0.0 and r.refusal is False


def test_whitespace_tokens_count_and_duplicates_add() -> None:
    # " 50" and "50" are different tokens that both say 50; an exact duplicate entry adds twice
    r = aggregate([("50", lp(0.2)), (" 50", lp(0.2)), ("90", lp(0.1)), ("90", lp(0.1))])
    assert r.valid_mass == pytest.approx(0.6)
    assert r.score == pytest.approx((50 * 0.4 + 90 * 0.2) / 0.6)
    assert len(r.top_logprobs) == 4  # kept as a list: a dict would drop the duplicate


def test_refusal_flag() -> None:
    assert is_refusal_token("REFUSAL") and is_refusal_token(" ref") and is_refusal_token("Refus")
    assert not is_refusal_token("RE") and not is_refusal_token("REFUSE") and not is_refusal_token("no")
    r = aggregate([("REF", lp(0.8)), ("20", lp(0.1))])
    assert r.refusal is True and r.score is None
    # refusal is a flag; the valid-mass rule alone decides the score
    r2 = aggregate([("REFUSAL", lp(0.4)), ("20", lp(0.35)), ("30", lp(0.25))])
    assert r2.refusal is True and r2.score == pytest.approx((20 * 0.35 + 30 * 0.25) / 0.6)
    # only the most probable token decides
    assert aggregate([("70", lp(0.6)), ("REFUSAL", lp(0.3))]).refusal is False


def test_accepts_openai_style_entries() -> None:
    r = aggregate([{"token": "10", "logprob": lp(0.5), "bytes": [49, 48]}, {"token": "x", "logprob": -3.0}])
    assert r.score == pytest.approx(10.0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["0", "7", " 42", "100", "101", "a", "REF", "050"]), st.floats(0.0, 1.0)),
        max_size=20,
    )
)
def test_score_is_a_weighted_mean_in_range(entries: list[tuple[str, float]]) -> None:
    top = [(t, math.log(p)) for t, p in entries if p > 0]
    r = aggregate(top)
    valid = [(parse_score_token(t), math.exp(x)) for t, x in top if parse_score_token(t) is not None]
    z = sum(p for _, p in valid)
    assert r.valid_mass == pytest.approx(z)
    if z < 0.25:
        assert r.score is None
    else:
        assert r.score is not None and 0.0 <= r.score <= 100.0


def test_number_probs_aggregation() -> None:
    probs = [0.0] * 101
    probs[20], probs[80] = 0.3, 0.1
    r = aggregate_number_probs(probs, refusal=False)
    assert r.valid_mass == pytest.approx(0.4) and r.score == pytest.approx((6 + 8) / 0.4)
    probs[80] = 0.0
    probs[20] = 0.2
    assert aggregate_number_probs(probs).score is None
    with pytest.raises(ValueError):
        aggregate_number_probs([0.1] * 100)


def test_score_module_imports_neither_torch_nor_openai() -> None:
    code = (
        "import sys, pvdata.judge, pvdata.judge.score, pvdata.judge.pipeline, pvdata.remote; "
        "print('torch' in sys.modules, 'openai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- rubrics -----------------------------------------------------------------------------------------------


def test_coherence_rubric_renders_and_asks_for_a_number() -> None:
    text = rubrics.render(rubrics.COHERENCE, "What is 2+2?", "4")
    assert "What is 2+2?" in text and "[ANSWER START]\n4\n[ANSWER END]" in text
    assert "0 and 100" in text and "{" not in text
    for anchor in ("0 means nonsense", "50 means confused or rambling", "100 means"):
        assert anchor in text


def test_render_keeps_braces_in_answers_and_rubrics() -> None:
    rubric = 'Score {question} / {answer}. JSON like {"a": 1} and {{literal}} stay.'
    out = rubrics.render(rubric, "q {answer} {0}", 'a {question} {} {"x": }')
    assert out == 'Score q {answer} {0} / a {question} {} {"x": }. JSON like {"a": 1} and {literal} stay.'


def test_rubric_placeholders_validated(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"\{answer\}"):
        rubrics.validate("Rate {question} only")
    with pytest.raises(ConfigError, match=r"\{question\} and \{answer\}"):
        rubrics.render("no placeholders", "q", "a")
    f = tmp_path / "r.txt"
    f.write_text("Q: {question}\nA: {answer}\nNumber 0-100 only.", encoding="utf-8")
    assert rubrics.load(f).startswith("Q: {question}")
    with pytest.raises(ConfigError, match="cannot read"):
        rubrics.load(tmp_path / "missing.txt")
    assert rubrics.rubric_hash("a") != rubrics.rubric_hash("b")
