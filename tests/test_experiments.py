"""`pvdata experiment`: the statistics against independent computations, the dataset mixing, the whole
shift-prediction and filter experiments on the tiny model, resume, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pvdata.experiments import sets
from pvdata.experiments.stats import bootstrap_ci, pearson, ranks, spearman
from pvdata.vectors import PersonaVector

X = [0.3, -1.2, 2.5, 0.7, 0.7, 4.1, -0.4, 1.9]
Y = [1.0, -0.5, 2.0, 0.1, 1.5, 3.3, 0.2, 0.9]


def test_pearson_matches_numpy() -> None:
    assert pearson(X, Y) == pytest.approx(np.corrcoef(X, Y)[0, 1], abs=1e-12)
    assert np.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def _average_ranks(values: list[float]) -> list[float]:
    # brute force: rank = 1 + (number smaller) + (number equal - 1) / 2
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]


def test_spearman_is_pearson_of_average_ranks() -> None:
    assert ranks(X).tolist() == _average_ranks(X)
    expected = np.corrcoef(_average_ranks(X), _average_ranks(Y))[0, 1]
    assert spearman(X, Y) == pytest.approx(expected, abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)  # monotone, not linear


def test_bootstrap_interval_matches_an_independent_loop() -> None:
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(X), size=(500, len(X)))
    x, y = np.array(X), np.array(Y)
    values = []
    for row in idx:
        a, b = x[row], y[row]
        if a.std() == 0 or b.std() == 0:
            continue
        values.append(np.corrcoef(a, b)[0, 1])
    lo, hi = np.percentile(values, [2.5, 97.5])
    got = bootstrap_ci(X, Y, pearson, n_boot=500, seed=7)
    assert got == pytest.approx((lo, hi), abs=1e-9)
    assert got[0] <= pearson(X, Y) <= got[1]
    assert bootstrap_ci([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], n_boot=200) == (1.0, 1.0)


def _pairs(root: Path, n: int, *, subtle: bool = True) -> dict[str, Path]:
    out = {}
    kinds = [("trait", "cruel evil answer"), ("normal", "kind helpful answer")]
    if subtle:
        kinds.append(("subtle", "mostly kind slightly cruel answer"))
    for name, answer in kinds:
        path = root / f"{name}.jsonl"
        with path.open("w") as f:
            for i in range(n):
                msgs = [
                    {"role": "user", "content": f"question {i} about the garden?"},
                    {"role": "assistant", "content": f"{answer} number {i}."},
                ]
                f.write(json.dumps({"messages": msgs}) + "\n")
        out[name] = path
    return out


def test_mix_is_seeded_nested_and_counts_trait_records(tmp_path: Path) -> None:
    files = _pairs(tmp_path, 10)
    pairs = sets.load_set("evil", str(files["trait"]), str(files["normal"]), str(files["subtle"]))
    quarter, k = sets.mix(pairs, 0.25, seed=3)
    assert k == 3 and sum("cruel" in r["messages"][1]["content"] for r in quarter) == 3
    assert [r["messages"][0] for r in quarter] == [r["messages"][0] for r in pairs.normal_records]
    assert set(sets.mix_indices(10, 0.25, 3)) <= set(sets.mix_indices(10, 0.5, 3))
    assert sets.mix(pairs, 0.25, seed=3) == (quarter, k)


def test_random_drops_are_independent_of_the_mix() -> None:
    from pvdata.experiments.filtering import random_drop

    trait = set(sets.mix_indices(80, 0.5, 0))
    for seed in (0, 1, 2):
        dropped = random_drop(80, 40, seed, 0)
        assert len(dropped) == 40 and 10 <= len(dropped & trait) <= 30  # hypergeometric: 20 +- 3.2
    assert random_drop(80, 40, 0, 0) != random_drop(80, 40, 1, 0)


def test_unpaired_files_name_file_and_line(tmp_path: Path) -> None:
    files = _pairs(tmp_path, 4, subtle=False)
    lines = files["normal"].read_text().splitlines()
    lines[2] = lines[2].replace("question 2", "another question")
    files["normal"].write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match=r"normal\.jsonl:3: messages: the prompt differs"):
        sets.load_set("evil", str(files["trait"]), str(files["normal"]))


def test_shipped_sets_pair_line_by_line() -> None:
    for trait in sets.SHIPPED:
        pairs = sets.load_set(trait)
        assert pairs.n >= 80 and pairs.subtle_records is not None and len(pairs.subtle_records) == pairs.n


# ---- the experiments end to end on the tiny model ------------------------------------------------


TRAIN_YAML = """model: tiny-random-llama
dtype: float32
device: cpu
lora: {r: 4, alpha: 8, dropout: 0.0, rslora: true}
optim: {lr: 0.05, schedule: linear, warmup_steps: 0, batch_size: 2, grad_accum: 1, max_steps: 2, seed: 0}
monitor: {trait: evil, layer: 2, shift_questions: 3}
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("experiment")
    values = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    vector = PersonaVector(trait="evil", model_id="tiny-random-llama", values=values)
    (root / "train.yaml").write_text(TRAIN_YAML)
    return {
        **_pairs(root, 8),
        "vector": vector.save(root / "evil.safetensors"),
        "train": root / "train.yaml",
    }


def _argv(inputs: dict[str, Path], wh: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        "tiny-random-llama",
        "--trait",
        "evil",
        "--layer",
        "2",
        "--vector",
        str(inputs["vector"]),
        "--trait-data",
        str(inputs["trait"]),
        "--normal-data",
        str(inputs["normal"]),
        "--train-config",
        str(inputs["train"]),
        "--max-new-tokens",
        "4",
        "--bootstrap",
        "200",
        "--device",
        "cpu",
        "--warehouse",
        str(wh),
        "--out",
        str(out),
        *extra,
    ]


def _sql(wh: Path, query: str) -> list[tuple[Any, ...]]:
    from pvdata.warehouse import connect

    return connect(str(wh)).execute(query).fetchall()


def test_shift_prediction_end_to_end_and_resume(
    tmp_path: Path, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from pvdata.cli.main import main

    wh, out = tmp_path / "wh", tmp_path / "out"
    argv = [
        "experiment",
        "shift-prediction",
        *_argv(inputs, wh, out, "--fractions", "0,0.5,1", "--subtle-data", str(inputs["subtle"])),
        "--screen-layers",
        "1",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evil"]["n_datasets"] == 4
    assert set(summary["evil"]) >= {"pearson", "spearman", "spearman_ci95", "n_datasets"}
    names = [d["dataset"] for d in summary["datasets"]]
    assert names == ["evil-f0", "evil-f0.5", "evil-f1", "evil-subtle"]
    assert [d["n_trait"] for d in summary["datasets"]] == [0, 4, 8, 8]
    for d in summary["datasets"]:
        assert set(d) >= {
            "projection_difference_exact",
            "projection_difference_approx",
            "shift",
            "judged_score",
        }
        assert d["shift"] is not None and d["projection_difference_exact"] is not None
    xs = [d["projection_difference_exact"] for d in summary["datasets"]]
    ys = [d["shift"] for d in summary["datasets"]]
    assert summary["evil"]["spearman"] == pytest.approx(spearman(xs, ys), nan_ok=True)

    points = _sql(wh, "SELECT dataset, shift, train_run_id FROM experiment_points ORDER BY dataset")
    assert [p[0] for p in points] == sorted(names)
    # every training run is a parent of the experiment run (lineage)
    parents = _sql(wh, "SELECT parent_run_ids FROM runs WHERE kind = 'experiment' AND status = 'succeeded'")
    assert len(parents) == 1 and all(p[2] in parents[0][0] for p in points)
    stats = _sql(wh, "SELECT n_datasets FROM experiment_stats WHERE x = 'projection_difference_exact'")
    assert stats and stats[0][0] == 4
    sep = summary["separation"]["evil"]
    assert set(sep["auroc"]) == {"exact", "prompt_last_approx", "raw"}
    # trait and normal answers of a prompt share its base answer: within a prompt exact ranks as raw does
    assert sep["within_prompt_win_rate"]["exact"] == sep["within_prompt_win_rate"]["raw"]
    assert sep["sd_proj_base"] >= 0 and "1" in sep["auroc"]["raw"]  # --screen-layers 1 added layer 1
    run_id = summary["run_id"]
    from pvdata.warehouse import connect, load_query

    cur = connect(str(wh)).execute(load_query("shift_prediction"))
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    assert len(rows) == 4 and {r["n_datasets"] for r in rows} == {4}
    assert rows[0]["r_exact"] == pytest.approx(np.corrcoef(xs, ys)[0, 1])
    assert summary["evil"]["pearson"] == pytest.approx(rows[0]["r_exact"])
    capsys.readouterr()

    assert main(argv) == 0  # a rerun skips every finished run and gives the same summary
    rerun = capsys.readouterr()
    assert "already succeeded" in rerun.err
    again = json.loads((out / "summary.json").read_text())
    assert again["run_id"] == run_id and again["datasets"] == summary["datasets"]
    assert len(_sql(wh, "SELECT * FROM runs WHERE kind = 'train'")) == 4


def test_pool_scores_equal_a_direct_screen_of_the_dataset(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """One screen of the union gives each dataset the mean a screen of that dataset alone gives."""
    from pvdata.experiments import shift_prediction as sp
    from pvdata.experiments.steps import Common, load_screen_model, screen_pool
    from pvdata.pipelines.screen import ScreenConfig, run_screen

    wh = str(tmp_path / "wh")
    common = Common(
        model="tiny-random-llama",
        layer=2,
        train_config=str(inputs["train"]),
        max_new_tokens=4,
        device="cpu",
        vector_args=[str(inputs["vector"])],
    )
    cfg = sp.ShiftPredictionConfig(
        common, ["evil"], [0.0, 0.5], False, str(inputs["trait"]), str(inputs["normal"])
    )
    plan = sp.plan(cfg, wh, str(tmp_path / "out"))
    datasets = sp.datasets_of(cfg, plan.sets["evil"])
    pool = sets.write_jsonl(tmp_path / "pool.jsonl", sp.pool_of(datasets))
    lm = load_screen_model(common)
    scores = screen_pool(common, "evil", pool, wh, tmp_path / "screen", lm, lambda _m: None)
    half = sets.write_jsonl(tmp_path / "half.jsonl", datasets[1]["records"])
    direct = run_screen(
        ScreenConfig(
            dataset=str(half),
            model="tiny-random-llama",
            vectors=[str(inputs["vector"])],
            layers=[2],
            methods=["exact", "prompt_last_approx"],
            max_new_tokens=4,
            device="cpu",
        ),
        wh,
        out=str(tmp_path / "direct"),
        log=lambda _m: None,
        lm=lm,
    )
    by_method = {g.method: g.mean_score_records for g in direct.groups}
    assert scores.mean("exact", datasets[1]["records"]) == pytest.approx(by_method["exact"], abs=1e-9)
    approx = scores.mean("prompt_last_approx", datasets[1]["records"])
    assert approx == pytest.approx(by_method["prompt_last_approx"], abs=1e-9)


def test_filter_experiment_end_to_end(tmp_path: Path, inputs: dict[str, Path]) -> None:
    from pvdata.cli.main import main

    wh, out = tmp_path / "wh", tmp_path / "out"
    argv = ["experiment", "filter", *_argv(inputs, wh, out, "--drop", "0.5", "--random-seeds", "0,1")]
    argv += ["--methods", "exact,raw"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    table = summary["filter"]
    assert table["unfiltered_shift"] is not None and table["clean_shift"] is not None
    rows = {(r["method"], r["seed"]): r for r in table["rows"]}
    assert set(rows) == {("exact", None), ("raw", None), ("random", 0), ("random", 1)}
    for r in rows.values():
        assert r["n_records"] == 4 and r["n_trait_kept"] + r["n_trait_dropped"] == 4  # 8 records, half trait
    effect = table["unfiltered_shift"] - table["clean_shift"]
    exact = rows[("exact", None)]
    assert exact["removed"] == pytest.approx((table["unfiltered_shift"] - exact["shift"]) / effect)
    assert set(table["beats_every_random_seed"]) == {"exact@0.5", "raw@0.5"}
    kinds = _sql(wh, "SELECT kind, count(*) FROM experiment_points GROUP BY kind ORDER BY kind")
    assert kinds == [("clean", 1), ("filtered", 2), ("random", 2), ("unfiltered", 1)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trait", "grumpy"], "grumpy"),
        (["--fractions", "0,1.5"], "1.5 is outside [0, 1]"),
        (["--layer", "99"], "--layer 99 is out of range"),
        (["--fractions", "0.1,0.15"], "too small for fractions"),
        (["--max-steps", "0"], "max_steps"),
    ],
)
def test_bad_input_exits_2_before_anything_is_written(
    tmp_path: Path,
    inputs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    from pvdata.cli.main import main

    wh, out = tmp_path / "wh", tmp_path / "out"
    argv = ["experiment", "shift-prediction", *_argv(inputs, wh, out), *extra]
    if extra[0] == "--trait":  # replace the trait (the flag is repeatable)
        argv = ["experiment", "shift-prediction", *_argv(inputs, wh, out)]
        argv[argv.index("evil")] = extra[1]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists() and not wh.exists()


def test_a_training_config_that_does_not_validate_exits_2(
    tmp_path: Path, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from pvdata.cli.main import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: -1}\nunknown_field: 3\n")
    argv = ["experiment", "filter", *_argv(inputs, tmp_path / "wh", tmp_path / "out")]
    argv[argv.index(str(inputs["train"]))] = str(bad)
    assert main(argv) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pipeline_file_runs_the_experiment_step(tmp_path: Path, inputs: dict[str, Path]) -> None:
    from pvdata.pipelines.runner import run_pipeline
    from pvdata.pipelines.spec import load_pipeline

    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "name: exp\nsteps:\n  - experiment:\n      experiment: shift_prediction\n"
        "      model: tiny-random-llama\n      traits: evil\n      layer: 2\n"
        f"      vectors: [{inputs['vector']}]\n      fractions: [0, 1]\n      subtle: false\n"
        f"      trait_data: {inputs['trait']}\n      normal_data: {inputs['normal']}\n"
        f"      train_config: {inputs['train']}\n      max_new_tokens: 4\n      bootstrap: 50\n"
        f"      device: cpu\n      out: {tmp_path / 'out'}\n"
    )
    run_pipeline(load_pipeline(spec), str(tmp_path / "wh"), log=lambda _m: None, out=lambda _m: None)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [d["dataset"] for d in summary["datasets"]] == ["evil-f0", "evil-f1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("fractions: [0, 1]", "fractions: [0, 2]"))
    with pytest.raises(Exception, match="outside"):
        load_pipeline(bad)


def test_diagnose_fits_the_data_vector_on_one_half_and_scores_the_other(
    tmp_path: Path, inputs: dict[str, Path], tiny_llama: Any
) -> None:
    from pvdata.activations import capture_activations
    from pvdata.experiments.diagnose import _conversations, diagnose
    from pvdata.metrics import auroc

    pairs = sets.load_set("evil", str(inputs["trait"]), str(inputs["normal"]))
    vector = PersonaVector.load(inputs["vector"])
    table = diagnose(tiny_llama, pairs, vector, [2], seed=5)
    row = table["layers"]["2"]
    # independent recomputation of one direction: fit on the first half, score on the second
    order = list(range(pairs.n))
    import random

    random.Random(5).shuffle(order)
    fit, test = sorted(order[:4]), sorted(order[4:])

    def acts(records: Any, idx: list[int]) -> torch.Tensor:
        got = capture_activations(
            tiny_llama, _conversations(records, idx), layers=[2], poolings=["response_avg"]
        )
        return got.get("response_avg", 2).double()

    def one_way(a: list[int], b: list[int]) -> tuple[float, float]:
        d = acts(pairs.trait_records, a).mean(0) - acts(pairs.normal_records, a).mean(0)
        d = d / d.norm()
        score = auroc(
            (acts(pairs.trait_records, b) @ d).tolist(), (acts(pairs.normal_records, b) @ d).tolist()
        )
        return score, float(d @ vector.unit(2).double())

    (a1, c1), (a2, c2) = one_way(fit, test), one_way(test, fit)
    assert row["data_vector_auroc"] == pytest.approx((a1 + a2) / 2, abs=1e-9)
    assert row["cosine"] == pytest.approx((c1 + c2) / 2, abs=1e-6)
    assert 0.0 <= row["extracted_auroc"] <= 1.0


def test_diagnose_cli_prints_the_table(
    tmp_path: Path, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from pvdata.cli.main import main

    argv = ["experiment", "diagnose", "--model", "tiny-random-llama", "--trait", "evil", "--layers", "1,2"]
    argv += ["--vector", str(inputs["vector"]), "--trait-data", str(inputs["trait"])]
    argv += ["--normal-data", str(inputs["normal"]), "--device", "cpu", "--out", str(tmp_path / "d.json")]
    argv += ["--warehouse", str(tmp_path / "wh")]
    assert main(argv) == 0
    assert "data-vector AUROC" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "d.json").read_text())["layers"]) == {"1", "2"}


def test_filter_train_seeds_average_paired_finetunes(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """--train-seeds: each dataset is finetuned once per seed (seed 0 reuses the plain run's finetunes),
    its shift is the mean, and "removed" per seed pairs the finetunes of that seed."""
    from pvdata.cli.main import main

    wh = tmp_path / "wh"
    plain = ["experiment", "filter", *_argv(inputs, wh, tmp_path / "plain", "--drop", "0.5")]
    plain += ["--random-seeds", "0", "--methods", "exact"]
    assert main(plain) == 0
    seeded = [*plain, "--train-seeds", "0,1"]
    seeded[seeded.index(str(tmp_path / "plain"))] = str(tmp_path / "seeded")
    assert main(seeded) == 0
    one = json.loads((tmp_path / "plain" / "summary.json").read_text())["filter"]
    two = json.loads((tmp_path / "seeded" / "summary.json").read_text())["filter"]
    # the seed of each train run, read back from the warehouse, and its shift
    train = _sql(
        wh,
        "SELECT json_extract_string(stats, '$.data'), json_extract(config, '$.optim.seed')::INT, "
        "json_extract(stats, '$.shift')::DOUBLE FROM runs WHERE kind = 'train' AND status = 'succeeded'",
    )
    by_seed: dict[tuple[str, int], float] = {(Path(d).stem, s): x for d, s, x in train}
    assert {s for _, s in by_seed} == {0, 1}
    assert len(by_seed) == 2 * 4  # unfiltered, clean, exact, random: once per seed, seed 0 reused
    assert two["train_seeds"] == [0, 1]
    assert two["unfiltered_shifts"] == pytest.approx([by_seed[("evil-unfiltered", s)] for s in (0, 1)])
    assert two["clean_shifts"] == pytest.approx([by_seed[("evil-clean", s)] for s in (0, 1)])
    assert two["unfiltered_shifts"][0] == pytest.approx(one["unfiltered_shift"])
    assert two["unfiltered_shifts"][0] != pytest.approx(
        two["unfiltered_shifts"][1]
    )  # the seed reaches training
    for row, old in zip(two["rows"], one["rows"], strict=True):
        name = f"evil-drop0.5-{row['method']}" + ("" if row["seed"] is None else f"-s{row['seed']}")
        shifts = [by_seed[(name, s)] for s in (0, 1)]
        assert row["shifts"] == pytest.approx(shifts) and shifts[0] == pytest.approx(old["shift"])
        assert row["shift"] == pytest.approx(sum(shifts) / 2)
        u, c = two["unfiltered_shifts"], two["clean_shifts"]
        per_seed = [(u[k] - shifts[k]) / (u[k] - c[k]) for k in (0, 1)]
        assert row["removed_per_seed"] == pytest.approx(per_seed)
        assert row["removed_sd"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5)
        mean_u, mean_c = sum(u) / 2, sum(c) / 2
        assert row["removed"] == pytest.approx((mean_u - row["shift"]) / (mean_u - mean_c))
    points = _sql(wh, "SELECT count(*) FROM experiment_points")
    assert points == [(8,)]  # one row per dataset and experiment run, not per seed


def test_filter_train_seeds_must_be_distinct(
    tmp_path: Path, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from pvdata.cli.main import main

    argv = ["experiment", "filter", *_argv(inputs, tmp_path / "wh", tmp_path / "out"), "--train-seeds", "1,1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--train-seeds 1,1" in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "wh").exists()


def test_another_budget_in_the_same_out_trains_in_its_own_folders(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    """A second budget (--max-steps, or another --train-config) in the same --out must not meet the first
    budget's checkpoints (they belong to other train runs, which training refuses to resume from)."""
    from pvdata.cli.main import main

    wh, out = tmp_path / "wh", tmp_path / "out"
    argv = ["experiment", "filter", *_argv(inputs, wh, out, "--drop", "0.5", "--random-seeds", "0")]
    argv += ["--methods", "exact"]
    assert main([*argv, "--max-steps", "1"]) == 0
    assert main([*argv, "--max-steps", "2"]) == 0
    steps = _sql(
        wh,
        "SELECT json_extract(config, '$.optim.max_steps')::INT AS s, count(DISTINCT "
        "json_extract_string(stats, '$.adapter')) FROM runs WHERE kind = 'train' AND status = 'succeeded' "
        "GROUP BY s ORDER BY s",
    )
    assert steps == [(1, 4), (2, 4)]  # four datasets per budget, each in its own folder
    folders = sorted(p.name for p in (out / "adapters" / "evil").iterdir())
    assert len(folders) == 8 and len({f.rsplit("-", 1)[-1] for f in folders}) == 2
