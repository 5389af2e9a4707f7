"""The stages' progress lines: throttled while running, always written at the end."""

from __future__ import annotations

from pvdata.pipelines.progress import rate_progress


def test_progress_lines_are_throttled_but_the_last_one_is_always_written() -> None:
    lines: list[str] = []
    report = rate_progress(lines.append, "projections", every_s=3600.0)
    report(1, 10)  # the first report is written (nothing written yet)
    report(2, 10)  # within the interval: suppressed
    report(9, 10)
    report(10, 10)  # done: always written
    assert len(lines) == 2
    assert lines[0].strip().startswith("projections: 1/10")
    assert lines[1].strip().startswith("projections: 10/10") and lines[1].endswith("~0s left")


def test_progress_every_report_is_written_without_an_interval() -> None:
    lines: list[str] = []
    report = rate_progress(lines.append, "base answers", every_s=0.0)
    for done in range(1, 4):
        report(done, 3)
    assert [line.split()[2] for line in lines] == ["1/3", "2/3", "3/3"]


def test_the_default_log_writes_to_stderr_and_keeps_stdout_for_results(capsys) -> None:
    import inspect

    from pvdata.pipelines import evaluate, extract, monitor, runner, screen
    from pvdata.pipelines.progress import stderr_log
    from pvdata.training import pipeline as train_pipeline

    stderr_log("      projections: 1/2")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "      projections: 1/2\n"
    stages = [extract.run_extract, evaluate.run_evaluate, monitor.run_monitor, screen.run_screen]
    for stage in [*stages, runner.run_pipeline, train_pipeline.run_train]:
        assert inspect.signature(stage).parameters["log"].default is stderr_log, stage.__name__
