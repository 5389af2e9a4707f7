"""`pvdata bench suite`: the prepared GPU run, checked on the tiny shape on a CPU."""

from __future__ import annotations

import pytest

import pvdata.bench.suite as suite
from pvdata.cli.main import main


def _suite(tmp_path, *argv):
    return main(["bench", "suite", "--out", str(tmp_path / "out"), *argv])


def test_a_step_runs_in_its_own_process_and_leaves_its_output(tmp_path, capsys):
    assert _suite(tmp_path, "--preset", "cpu-smoke", "--only", "decode-tiny") == 0
    out = tmp_path / "out"
    log = (out / "decode-tiny.txt").read_text()
    assert "decode hf/drop time ratio: " in log and "same answers drop/hf: 8/8" in log
    summary = (out / "summary.txt").read_text().splitlines()
    assert len(summary) == 1 and summary[0].startswith("decode-tiny: ok in ")
    assert "python -m pvdata.bench generate --model-shape tiny" in summary[0]


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    bad = suite.Step("bad", "generate --model-shape tiny --device cpu --stop-fraction 5")
    good = suite.Step("good", "generate --model-shape tiny --device cpu --prompts 2 --max-new-tokens 2")
    monkeypatch.setitem(suite.PRESETS, "cpu-smoke", (bad, good))
    assert _suite(tmp_path, "--preset", "cpu-smoke") == 1
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert summary[0].startswith("bad: failed (rc 2)") and summary[1].startswith("good: ok")
    assert "--stop-fraction must be between 0 and 1" in (tmp_path / "out" / "bad.txt").read_text()


def test_steps_that_would_start_past_the_budget_are_skipped(tmp_path):
    assert _suite(tmp_path, "--preset", "gpu", "--budget-s", "10") == 0
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == [s.name for s in suite.PRESETS["gpu"]]
    assert all("skipped (budget" in line for line in summary)


def test_unknown_step_names_are_a_config_error(tmp_path, capsys):
    assert _suite(tmp_path, "--only", "screen-0.5b,nope") == 2
    err = capsys.readouterr().err
    assert "unknown step(s) nope" in err and "extract-0.5b" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("preset", sorted(suite.PRESETS))
def test_every_step_parses_with_its_bench(preset):
    """A typo in a prepared command would cost a GPU session: every step's arguments must parse."""
    import argparse
    from pathlib import Path

    from pvdata.bench import add_bench_parsers

    parser = argparse.ArgumentParser()
    add_bench_parsers(parser.add_subparsers(dest="bench", required=True))
    for step in suite.PRESETS[preset]:
        parser.parse_args(step.argv(Path("out")))
