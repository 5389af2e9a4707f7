"""CLI rough edges a new user hits: `| head`, --debug anywhere, a file as --warehouse, flag help and
names in messages, `pvdata sql --format parquet`, `pvdata runs list` width, vectors of another model."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pvdata.cli.main import build_parser, main
from pvdata.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    env.pop("PVDATA_WAREHOUSE", None)
    return env


def _pvdata(*args: str) -> list[str]:
    return [sys.executable, "-m", "pvdata.cli.main", *args]


def _subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of every subcommand at every level."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from _subparsers(child, (*path, name))


def _vector(model_id: str, width: int = 64, trait: str = "evil", seed: int = 0):
    """A response_avg vector of a 4-block model at layers 1..4 (tiny-random-* have width 64)."""
    import torch

    from pvdata.vectors import PersonaVector

    values = torch.zeros(5, width)
    values[1:] = torch.randn(4, width, generator=torch.Generator().manual_seed(seed))
    return PersonaVector(
        trait=trait,
        model_id=model_id,
        values=values,
        pooling="response_avg",
        method="mean_diff",
        n_pos=4,
        n_neg=4,
        layers=(1, 2, 3, 4),
    )


# -- 1. a reader that closes the pipe early ------------------------------------------------------------


def test_output_into_a_pipe_closed_early_is_no_traceback(tmp_path):
    """`pvdata sql ... | head -1`: far more output than a pipe holds, the reader leaves after one line."""
    wh = tmp_path / "wh"
    wh.mkdir()
    query = "SELECT range AS n FROM range(300000)"
    proc = subprocess.Popen(
        _pvdata("sql", query, "--format", "csv", "--warehouse", str(wh)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert first == b"n\n"
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert code == 141  # 128 + SIGPIPE, as a shell reports `yes | head`: the output was cut


def test_the_shell_pipeline_to_head(tmp_path):
    """The same through a real shell: `pvdata sql ... | head -1` with pipefail."""
    wh = tmp_path / "wh"
    wh.mkdir()
    cmd = " ".join(_pvdata("sql", "'SELECT * FROM range(300000)'", "--format", "csv", "--warehouse", str(wh)))
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {cmd} | head -1"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert done.stdout == "range\n" and "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 141


def test_a_closed_stdout_does_not_stop_the_work(tmp_path):
    """With stdout already closed, a command still does all its work (here: writes a warehouse run)
    and reports the cut output by its exit status only."""
    wh = tmp_path / "wh"
    vec_file = tmp_path / "evil.safetensors"
    _vector(model_id="tiny-random-llama").save(vec_file)
    proc = subprocess.Popen(
        _pvdata("vectors", "import", str(vec_file), "--warehouse", str(wh)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err, err
    from pvdata.warehouse import connect

    rows = connect(wh).execute("SELECT kind, status FROM runs").fetchall()
    assert rows == [("import", "succeeded")]


def test_pipe_safe_stream_drops_writes_after_the_reader_left():
    from pvdata.cli.pipes import PipeSafeStream

    class Closed:
        def __init__(self) -> None:
            self.calls = 0

        def write(self, text: str) -> int:
            self.calls += 1
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            raise OSError("no descriptor")

    closed = Closed()
    safe = PipeSafeStream(closed)  # type: ignore[arg-type]
    assert safe.write("one\n") == 4 and safe.broken
    safe.write("two\n")
    safe.flush()
    assert closed.calls == 1  # nothing is tried again once the pipe is known to be closed

    class Full:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        PipeSafeStream(Full()).write("x")  # type: ignore[arg-type]  # other errors are not hidden


# -- 2. --debug before or after the subcommand ---------------------------------------------------------


def test_debug_after_the_subcommand_too(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert main(["runs", "list", "--warehouse", missing]) == 2
    assert "error:" in capsys.readouterr().err
    for argv in (
        ["--debug", "runs", "list", "--warehouse", missing],
        ["runs", "list", "--warehouse", missing, "--debug"],
        ["runs", "--debug", "list", "--warehouse", missing],
        ["sql", "SELECT 1", "--debug", "--warehouse", missing],
    ):
        with pytest.raises(Exception) as info:  # --debug: the exception itself, with its traceback
            main(argv)
        assert "does not exist" in str(info.value), argv


def test_every_subcommand_takes_debug():
    parser = build_parser()
    for path, sub in _subparsers(parser):
        assert "--debug" in sub._option_string_actions, path


# -- 4. --warehouse that is a file -----------------------------------------------------------------------


def test_every_warehouse_option_is_seen_by_the_shared_check():
    """main checks args.warehouse before running a command: every --warehouse must land there."""
    found = []
    for path, sub in _subparsers(build_parser()):
        action = sub._option_string_actions.get("--warehouse")
        if action is not None:
            assert action.dest == "warehouse", path
            found.append(path[0])
    assert {"screen", "extract", "sql", "runs", "judge", "train", "evaluate", "generate"} <= set(found)


@pytest.mark.parametrize(
    "argv",
    [
        ["sql", "SELECT 1"],
        ["runs", "list"],
        ["runs", "show", "abc"],
        ["vectors", "list"],
        ["screen", "no-such-data.jsonl", "--model", "tiny-random-llama"],
        ["extract", "--trait", "evil", "--model", "tiny-random-llama"],
        ["judge", "--run", "abc", "--judge", "none", "--coherence"],
        ["generate", "--model", "tiny-random-llama", "--prompts", "no-such-prompts.jsonl"],
    ],
)
def test_a_warehouse_that_is_a_file_is_one_clear_error(tmp_path, capsys, argv):
    f = tmp_path / "warehouse.db"
    f.write_text("not a warehouse")
    assert main([*argv, "--warehouse", str(f)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    (line,) = out.err.splitlines()
    assert line == (
        f"pvdata {argv[0]}: error: --warehouse {f} is a file, not a folder: give a warehouse folder "
        "(it is created if missing) or a URI"
    )
    assert f.read_text() == "not a warehouse"


def test_a_warehouse_file_from_the_environment(tmp_path, monkeypatch):
    from pvdata.cli.options import warehouse_root

    f = tmp_path / "wh"
    f.write_text("")
    monkeypatch.setenv("PVDATA_WAREHOUSE", str(f))
    with pytest.raises(ConfigError, match=r"^\$PVDATA_WAREHOUSE .* is a file, not a folder"):
        warehouse_root(None)
    assert warehouse_root(str(tmp_path)) == str(tmp_path)  # a folder, given: fine
    with pytest.raises(ConfigError, match="is a file"):
        warehouse_root(f"file://{f}")


# -- 6. --layer help states the real default -------------------------------------------------------------


def _help(parser: argparse.ArgumentParser, flag: str) -> str:
    return " ".join(str(parser._option_string_actions[flag].help).split())


def test_layer_help_states_the_real_defaults():
    from pvdata.pipelines.screen import DEFAULT_DEPTH

    subs = dict(_subparsers(build_parser()))
    screen = _help(subs[("screen",)], "--layer")
    assert f"{DEFAULT_DEPTH:g} of the model's depth" in screen and "half" not in screen
    target = int(DEFAULT_DEPTH * 30 + 0.5)
    assert f"e.g. {target} of 30 blocks" in screen  # smollm2-135m: what the summary then reports
    assert "default: all, 0 (embeddings) to L" in _help(subs[("extract",)], "--layers")
    assert "default: none, only the unsteered baseline" in _help(subs[("evaluate",)], "--layers")
    assert "L//2" in _help(subs[("train",)], "--layers")
    assert "else L//2" in _help(subs[("train",)], "--monitor-layer")
    assert "but 0" in _help(subs[("monitor",)], "--layers")
    for path, sub in subs.items():
        for flag in ("--layer", "--layers", "--monitor-layer"):
            action = sub._option_string_actions.get(flag)
            if action is not None and action.default is None and not action.required:
                assert "default" in str(action.help), (path, flag)


# -- 7. pvdata sql --format parquet --output FILE --------------------------------------------------------


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    from warehouse_helpers import populate

    root = tmp_path_factory.mktemp("sqlwh")
    populate(root)
    return root


def test_sql_parquet_output_is_the_query_result(populated, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pvdata.warehouse import connect

    out = tmp_path / "result.parquet"
    query = "SELECT vector_id, layer, values, trait FROM vectors ORDER BY layer"
    argv = ["sql", query, "--format", "parquet", "--output", str(out), "--warehouse", str(populated)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"wrote 2 row(s), 4 column(s) to {out}" in captured.err
    table = pq.read_table(out)
    expected = connect(populated).execute(query).fetchall()
    assert table.num_rows == len(expected) == 2
    got = list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert [(v, layer, t) for v, layer, _, t in got] == [(v, layer, t) for v, layer, _, t in expected]
    for (*_, values, _t), (*_, ref, _r) in zip(got, expected, strict=True):
        assert values == pytest.approx(list(ref))
    assert table.schema.field("layer").type == pa.int32()  # the warehouse's types, not text
    assert table.schema.field("values").type.value_type == pa.float32()


def test_sql_output_for_csv_too_and_parquet_errors(populated, tmp_path, capsys):
    out = tmp_path / "n.csv"
    q = "SELECT count(*) AS n FROM generations"
    assert main(["sql", q, "--format", "csv", "-o", str(out), "--warehouse", str(populated)]) == 0
    assert out.read_text() == "n\n30\n" and capsys.readouterr().out == ""
    # parquet without --output: one line, nothing run, nothing printed
    assert main(["sql", q, "--format", "parquet", "--warehouse", str(populated)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert "--format parquet writes a file: add --output FILE.parquet" in captured.err
    # a failing query or a missing folder writes nothing
    bad = tmp_path / "bad.parquet"
    assert main(["sql", "SELEC 1", "--format", "parquet", "-o", str(bad), "--warehouse", str(populated)]) == 2
    assert not bad.exists() and list(tmp_path.glob(".bad.parquet.*")) == []
    missing = tmp_path / "nope" / "x.parquet"
    assert main(["sql", q, "--format", "parquet", "-o", str(missing), "--warehouse", str(populated)]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- 8. pvdata runs list: 120 columns, what each run was about ----------------------------------------------

LONG_DATASET = "customer_support_conversations_scraped_from_the_forum_2025_cleaned_v3.jsonl"


@pytest.fixture(scope="module")
def screened(tmp_path_factory, tiny_llama):
    """A warehouse with a real screen (4 stages) on the tiny model, an imported vector of another trait
    and a failed run with a long error."""
    import json

    from pvdata.pipelines.screen import ScreenConfig, run_screen
    from pvdata.warehouse import Warehouse

    tmp = tmp_path_factory.mktemp("runs")
    data = tmp / LONG_DATASET
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Q{i}?"},
                        {"role": "assistant", "content": f"A {i}"},
                    ]
                }
            )
            + "\n"
            for i in range(6)
        )
    )
    vec = tmp / "evil.safetensors"
    _vector(model_id="tiny-random-llama").save(vec)
    root = tmp / "wh"
    cfg = ScreenConfig(dataset=str(data), model="tiny-random-llama", vectors=[str(vec)], max_new_tokens=4)
    run_screen(cfg, str(root), log=lambda _m: None, lm=tiny_llama)
    other = tmp / "humorous.safetensors"
    _vector(model_id="tiny-random-llama", trait="humorous", seed=1).save(other)
    assert main(["vectors", "import", str(other), "--warehouse", str(root)]) == 0
    wh = Warehouse(root)
    with pytest.raises(RuntimeError), wh.run("judge", {"metric": "coherence", "generation_run_id": "x"}):
        raise RuntimeError("the judge server answered 503 " + "Service Unavailable; " * 10 + "\nline two")
    return root


def test_runs_list_fits_120_columns_and_says_what_each_run_was_about(screened, capsys):
    assert main(["runs", "list", "--warehouse", str(screened)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run_id", "status", "started", "secs", "model", "trait", "dataset"]
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    rows = {line.split()[0]: line for line in lines[2:] if not line.startswith(" ")}
    errors = [line for line in lines if line.startswith("    error: ")]
    kinds = sorted(run_id.rsplit("-", 1)[0] for run_id in rows)
    assert kinds == ["activations", "generate", "import", "import", "judge", "screen"]
    (screen,) = [line for run_id, line in rows.items() if run_id.startswith("screen-")]
    assert "tiny-random-llama" in screen and " evil " in screen
    cut = screen.split()[-1]  # the long file name, cut with an ellipsis to fit
    assert cut.endswith("…") and LONG_DATASET.startswith(cut[:-1]) and len(cut) >= 8
    (failed,) = [line for run_id, line in rows.items() if run_id.startswith("judge-")]
    assert "failed" in failed and " coherence " in failed
    (error,) = errors  # on the line under the failed run, cut to fit
    assert lines[lines.index(failed) + 1] == error
    assert error.startswith("    error: RuntimeError: the judge server answered 503 Service Unavailable;")
    assert len(error) == 120 and error.endswith("…") and "line two" not in error
    humorous = [line for run_id, line in rows.items() if " humorous " in line]
    assert len(humorous) == 1 and "humorous.safetensors" in humorous[0]


def test_runs_list_csv_has_the_whole_values(screened, capsys):
    import csv
    import io

    assert main(["runs", "list", "--format", "csv", "--warehouse", str(screened)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    by_kind = {r["kind"]: r for r in rows}
    assert by_kind["screen"]["dataset"] == LONG_DATASET and by_kind["screen"]["trait"] == "evil"
    assert by_kind["activations"]["dataset"] == LONG_DATASET  # a stage names its dataset by id only
    assert by_kind["judge"]["error"].endswith("line two")


# -- 3. a vector made on another model -------------------------------------------------------------------


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("pvdata: warning:")]


def test_another_models_vector_is_one_warning_naming_both(capsys):
    v = _vector(model_id="tiny-random-llama", seed=7)
    v.check_compatible(4, 64, "tiny-random-llama")
    assert _warnings(capsys.readouterr().err) == []  # its own model: silent
    for _ in range(3):  # every batch checks again: still one line
        v.check_compatible(4, 64, "my-finetune/")
    (line,) = _warnings(capsys.readouterr().err)
    assert f"vector {v.vector_id} was extracted from model tiny-random-llama, not my-finetune/" in line
    from pvdata.errors import VectorError

    with pytest.raises(VectorError, match="has width 64 but model tiny-random-qwen2 has hidden size 32"):
        v.check_compatible(4, 32, "tiny-random-qwen2")


def test_screen_with_a_vector_of_another_model(tmp_path, capsys, tiny_qwen2):
    import json

    from pvdata.pipelines.screen import ScreenConfig, run_screen

    data = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A"}]}
        for i in range(4)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vec = tmp_path / "llama.safetensors"
    v = _vector(model_id="tiny-random-llama", seed=11)
    v.save(vec)
    cfg = ScreenConfig(dataset=str(data), model="tiny-random-qwen2", vectors=[str(vec)], max_new_tokens=3)
    result = run_screen(cfg, str(tmp_path / "wh"), log=lambda _m: None, lm=tiny_qwen2)
    assert set(result.stage_runs) >= {"dataset_projections"} and result.run_id.startswith("screen-")
    (line,) = _warnings(capsys.readouterr().err)
    assert "tiny-random-llama" in line and "tiny-random-qwen2" in line and v.vector_id in line
    # another width: refused, one clear line, exit 2
    narrow = tmp_path / "narrow.safetensors"
    _vector(model_id="some-other-model", width=32).save(narrow)
    argv = ["screen", str(data), "--model", "tiny-random-qwen2", "--vector", str(narrow)]
    assert main([*argv, "--warehouse", str(tmp_path / "wh2"), "--max-new-tokens", "3"]) == 2
    (err,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert err.startswith("pvdata screen: error: vector ") and "has width 32" in err
    assert "model tiny-random-qwen2 has hidden size 64" in err


def test_steering_with_a_vector_of_another_model(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"question": "Hi?"}\n')
    vec = tmp_path / "llama.safetensors"
    v = _vector(model_id="tiny-random-llama", seed=12)
    v.save(vec)
    argv = ["generate", "--model", "tiny-random-qwen2", "--prompts", str(prompts), "--vector", str(vec)]
    argv += ["--layers", "2", "--max-new-tokens", "2", "--warehouse", str(tmp_path / "wh")]
    assert main(argv) == 0
    (line,) = _warnings(capsys.readouterr().err)
    assert f"{v.vector_id} was extracted from model tiny-random-llama, not tiny-random-qwen2" in line


# -- 5. the "too long" reason names a flag that exists -------------------------------------------------------


def _named_flags(text: str) -> set[str]:
    import re

    return set(re.findall(r"--[a-z][a-z-]+", text))


def test_screen_max_length_skips_long_samples_and_the_reason_names_it(tmp_path, capsys):
    import json

    data = tmp_path / "d.jsonl"
    answers = ["short.", " ".join(f"w{i}" for i in range(60)), "also short."]
    rows = [
        {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": a}]}
        for a in answers
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vec = tmp_path / "evil.safetensors"
    _vector(model_id="tiny-random-llama", seed=21).save(vec)
    wh, out = tmp_path / "wh", tmp_path / "out"
    argv = ["screen", str(data), "--model", "tiny-random-llama", "--vector", str(vec), "--method", "raw"]
    argv += ["--top-k", "1", "--max-length", "40", "--warehouse", str(wh), "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    from pvdata.warehouse import connect

    con = connect(wh)
    (reason,) = con.execute("SELECT reason FROM screenings WHERE score IS NULL").fetchone()
    assert "too long" in reason and "the limit is 40" in reason
    screen_flags = set(dict(_subparsers(build_parser()))[("screen",)]._option_string_actions)
    assert "--max-length" in _named_flags(reason) and _named_flags(reason) <= screen_flags
    assert len((out / "unscreened.jsonl").read_text().splitlines()) == 1
    (config,) = con.execute("SELECT config FROM runs WHERE kind = 'activations'").fetchone()
    assert json.loads(config)["max_length"] == 40  # another limit is another run
    assert main([*argv[:-6], "--max-length", "0", "--warehouse", str(wh)]) == 2
    assert "--max-length 0 must be >= 1" in capsys.readouterr().err


def test_extract_max_length_reaches_the_capture(tmp_path, tiny_llama):
    import json

    from pvdata.errors import PvdataError
    from pvdata.pipelines.extract import ExtractConfig, run_extract
    from pvdata.warehouse import connect

    cfg = ExtractConfig(
        trait="evil",
        model="tiny-random-llama",
        questions=1,
        instructions=1,
        n_per_question=1,
        max_new_tokens=4,
        judge="none",
        layers=[2],
        max_length=5,  # shorter than any rollout
    )
    with pytest.raises(PvdataError):  # nothing captured: no vector can be built
        run_extract(cfg, str(tmp_path / "wh"), lm=tiny_llama, log=lambda _m: None)
    con = connect(tmp_path / "wh", include_running=True)
    (config, stats) = con.execute(
        "SELECT config, stats FROM runs_all WHERE kind = 'activations' AND stats IS NOT NULL"
    ).fetchone()
    assert json.loads(config)["max_length"] == 5
    assert "the limit is 5 (raise it with --max-length)" in stats
    extract_flags = set(dict(_subparsers(build_parser()))[("extract",)]._option_string_actions)
    assert "--max-length" in extract_flags


def test_a_screen_piped_into_head_finishes_every_stage(tmp_path):
    """`pvdata screen ... 2>&1 | head -1`: the progress lines hit the closed pipe from the first stage on;
    the screen still runs to the end and every stage's run succeeds."""
    import json

    data = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": "A."}]}
        for i in range(5)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vec = tmp_path / "evil.safetensors"
    _vector(model_id="tiny-random-llama", seed=31).save(vec)
    wh = tmp_path / "wh"
    argv = [
        "screen",
        str(data),
        "--model",
        "tiny-random-llama",
        "--vector",
        str(vec),
        "--max-new-tokens",
        "3",
    ]
    proc = subprocess.Popen(
        _pvdata(*argv, "--warehouse", str(wh)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 141
    assert first.startswith(b"[1/5]")
    from pvdata.warehouse import connect

    runs = connect(wh).execute("SELECT kind, status FROM runs ORDER BY kind").fetchall()
    assert runs == [
        ("activations", "succeeded"),
        ("generate", "succeeded"),
        ("import", "succeeded"),
        ("screen", "succeeded"),
    ]
    assert (wh / "exports").is_dir() and list((wh / "exports").glob("*/summary.json"))
