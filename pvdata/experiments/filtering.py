"""`pvdata experiment filter`: the user's real decision. On a contaminated set, drop the top share of
samples by each screening method (and the same counts at random), finetune on each remainder with the
same budget, and compare each shift with the unfiltered set's and with a clean set's.

"Removed" is the share of the contamination's effect a filter takes away: (shift_unfiltered - shift) /
(shift_unfiltered - shift_clean), where clean is the same prompts answered normally; the shift relative to
the base model is reported beside it, since finetuning on clean data moves the model too.

`train_seeds` repeats every finetune with other training seeds (the data stay the same): a dataset's
shift is then the mean over the seeds, and "removed" is also computed per seed, pairing each filtered
finetune with the unfiltered and clean finetunes of the same seed, so its spread is the training noise
of one cell.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.experiments import sets as sets_mod
from pvdata.experiments.shift_prediction import point, pool_of, write_results
from pvdata.experiments.steps import (
    METHODS,
    Common,
    Log,
    Trained,
    check_train_config,
    finetune,
    load_screen_model,
    resolve_vectors,
    screen_pool,
    stderr,
)

DEFAULT_DROPS = (0.1, 0.25, 0.5)


@dataclass
class FilterConfig:
    common: Common
    trait: str
    contamination: float = 0.5
    drops: list[float] = field(default_factory=lambda: list(DEFAULT_DROPS))
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    random_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    train_seeds: list[int] | None = None  # None: one finetune per dataset, with --seed
    trait_data: str | None = None
    normal_data: str | None = None


@dataclass
class FilterPlan:
    cfg: FilterConfig
    pairs: sets_mod.PairedSet
    config: dict[str, Any]
    out: Path


def plan(cfg: FilterConfig, warehouse: str, out: str | None = None) -> FilterPlan:
    """Every check before any model loads or any file is written."""
    from pvdata.errors import ConfigError
    from pvdata.training.data import file_sha256
    from pvdata.traits import load_trait
    from pvdata.warehouse import Warehouse
    from pvdata.warehouse.ids import config_hash

    load_trait(cfg.trait)
    sets_mod.check_fractions([cfg.contamination], what="--contamination")
    sets_mod.check_fractions(cfg.drops, what="--drop")
    if any(d >= 1.0 for d in cfg.drops):
        raise ConfigError("--drop: dropping every sample leaves nothing to train on; use values below 1")
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods:
        raise ConfigError(f"--methods {','.join(cfg.methods)}: valid methods are {', '.join(METHODS)}")
    seeds = cfg.train_seeds
    if seeds is not None and (not seeds or len(set(seeds)) < len(seeds)):
        raise ConfigError(f"--train-seeds {','.join(map(str, seeds))}: give one or more distinct integers")
    check_train_config(cfg.common)
    pairs = sets_mod.load_set(cfg.trait, cfg.trait_data, cfg.normal_data, subtle=False)
    counts = sets_mod.trait_counts(pairs.n, cfg.drops)
    if min(counts) < 1 or pairs.n - max(counts) < 1:
        raise ConfigError(
            f"--drop {','.join(f'{d:g}' for d in cfg.drops)}: a set of {pairs.n} records gives drops of "
            f"{counts} records; each must drop at least one and keep at least one"
        )
    sets_mod.check_fractions(cfg.drops, pairs.n, what="--drop")
    resolve_vectors(warehouse, cfg.common, [cfg.trait])
    c = cfg.common
    config = {
        "experiment": "filter",
        "model": c.model,
        "layer": c.layer,
        "trait": cfg.trait,
        "vector": c.vectors[cfg.trait].vector_id,
        "contamination": cfg.contamination,
        "drops": list(cfg.drops),
        "methods": list(cfg.methods),
        "random_seeds": list(cfg.random_seeds),
        "data": [file_sha256(p) for p in (pairs.trait_path, pairs.normal_path)],
        "train_config_sha256": file_sha256(c.train_config) if c.train_config else None,
        "max_steps": c.max_steps,
        "judge": c.judge,
        "seed": c.seed,
        "max_new_tokens": c.max_new_tokens,
        "base_samples": c.base_samples,
        "dtype": c.dtype,
    }
    if cfg.train_seeds is not None:  # absent otherwise, so earlier experiment runs keep their ids
        config["train_seeds"] = list(cfg.train_seeds)
    folder = (
        Path(out).resolve()
        if out
        else Warehouse(warehouse).local_dir("exports", f"experiment-{config_hash(config)[:12]}")
    )
    return FilterPlan(cfg, pairs, config, folder)


def remainders(
    cfg: FilterConfig, records: list[dict[str, Any]], is_trait: list[bool], scores: Any
) -> list[dict[str, Any]]:
    """The filtered datasets: top share dropped per method, and the same counts dropped at random."""
    n = len(records)
    out = []
    for drop, k in zip(cfg.drops, sets_mod.trait_counts(n, cfg.drops), strict=True):
        for method in cfg.methods:
            keyed = [(scores.score_of(method, r), i) for i, r in enumerate(records)]
            if any(s is None for s, _ in keyed):
                raise RuntimeError(
                    f"{method}: some samples were not scored; see the screen's unscreened.jsonl"
                )
            ranked = sorted(keyed, key=lambda si: (-si[0], si[1]))  # highest first, ties by position
            dropped = {i for _, i in ranked[:k]}
            out.append(_subset(cfg, records, is_trait, dropped, drop, method, None))
        for seed in cfg.random_seeds:
            dropped = random_drop(n, k, seed, cfg.common.seed)
            out.append(_subset(cfg, records, is_trait, dropped, drop, "random", seed))
    return out


def random_drop(n: int, k: int, seed: int, mix_seed: int) -> set[int]:
    """k of n indices at random, from a stream independent of the mixing shuffle: seeding both with the
    same integer would make `sample` pick exactly the positions the shuffle left normal."""
    return set(random.Random(f"pvdata.filter.random-drop:{mix_seed}:{seed}").sample(range(n), k))


def _subset(
    cfg: FilterConfig,
    records: list[dict[str, Any]],
    is_trait: list[bool],
    dropped: set[int],
    drop: float,
    method: str,
    seed: int | None,
) -> dict[str, Any]:
    keep = [i for i in range(len(records)) if i not in dropped]
    name = f"{cfg.trait}-drop{drop:g}-{method}" + (f"-s{seed}" if seed is not None else "")
    return {
        "dataset": name,
        "kind": "random" if method == "random" else "filtered",
        "fraction": drop,
        "method": method,
        "seed": seed,
        "records": [records[i] for i in keep],
        "n_trait": sum(is_trait[i] for i in keep),
        "n_trait_dropped": sum(is_trait[i] for i in dropped),
    }


def run(plan_: FilterPlan, warehouse: str, *, log: Log = stderr) -> dict[str, Any]:
    cfg, common, out = plan_.cfg, plan_.cfg.common, plan_.out
    pairs = plan_.pairs
    contaminated, k = sets_mod.mix(pairs, cfg.contamination, common.seed)
    chosen = set(sets_mod.mix_indices(pairs.n, cfg.contamination, common.seed))
    is_trait = [i in chosen for i in range(pairs.n)]
    clean, _ = sets_mod.mix(pairs, 0.0, common.seed)
    base: list[dict[str, Any]] = [
        {
            "dataset": f"{cfg.trait}-unfiltered",
            "kind": "unfiltered",
            "fraction": 0.0,
            "records": contaminated,
            "n_trait": k,
        },
        {"dataset": f"{cfg.trait}-clean", "kind": "clean", "fraction": None, "records": clean, "n_trait": 0},
    ]
    folder = out / "datasets" / cfg.trait
    pool = sets_mod.write_jsonl(folder / "pool.jsonl", pool_of(base))
    log(
        f"== {cfg.trait}: screening the contaminated set ({k}/{pairs.n} trait records) "
        f"at layer {common.layer}"
    )
    lm = load_screen_model(common)
    try:
        scores = screen_pool(common, cfg.trait, pool, warehouse, out / "screens" / cfg.trait, lm, log)
    finally:
        del lm
    datasets = base + remainders(cfg, contaminated, is_trait, scores)
    seeds = cfg.train_seeds if cfg.train_seeds is not None else [common.seed]
    points, children = [], [scores.screen_run_id]
    for d in datasets:
        d["path"] = sets_mod.write_jsonl(folder / f"{d['dataset']}.jsonl", d["records"])
        runs = []
        for train_seed in seeds:
            log(
                f"== {cfg.trait}: finetuning on {d['dataset']} ({len(d['records'])} records, "
                f"{d['n_trait']} trait)" + (f", training seed {train_seed}" if len(seeds) > 1 else "")
            )
            trained = finetune(common, cfg.trait, d["path"], out, warehouse, log, train_seed)
            children += [r for r in (trained.train_run_id, trained.evaluate_run_id) if r]
            runs.append(trained)
        points.append(
            {
                **point(d, cfg.trait, common.layer, scores, mean_trained(runs)),
                "n_trait_dropped": d.get("n_trait_dropped"),
                "shifts": [t.shift for t in runs],
            }
        )
    table = filter_table(points, seeds)
    rows = [{k: v for k, v in p.items() if k not in ("n_trait_dropped", "shifts")} for p in points]
    return write_results(plan_, warehouse, rows, [], children, "filter", {"filter": table})


def mean_trained(runs: list[Trained]) -> Trained:
    """One dataset's finetunes as one point: the mean shift (and judged score) over training seeds; the
    first seed's run ids (every seed's runs are children of the experiment run)."""
    if len(runs) == 1:
        return runs[0]

    def mean(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else float(sum(values)) / len(values)  # type: ignore[arg-type]

    first = runs[0]
    return Trained(
        first.train_run_id,
        first.adapter,
        mean([t.shift for t in runs]),
        mean([t.judged_score for t in runs]),
        first.evaluate_run_id,
    )


def removed_share(shift: float | None, unfiltered: float | None, clean: float | None) -> float | None:
    """(unfiltered - shift) / (unfiltered - clean): the share of the contamination's effect removed."""
    if shift is None or unfiltered is None or clean is None or unfiltered == clean:
        return None
    return (unfiltered - shift) / (unfiltered - clean)


def filter_table(points: list[dict[str, Any]], train_seeds: list[int] | None = None) -> dict[str, Any]:
    """Per drop share and method: shift, removed share, trait samples dropped. With several training
    seeds, shifts are means over them and `removed_per_seed` pairs each seed's finetunes."""
    by_kind = {p["kind"]: p for p in points if p["kind"] in ("unfiltered", "clean")}
    unf, clean = by_kind["unfiltered"]["shift"], by_kind["clean"]["shift"]
    unf_seeds = by_kind["unfiltered"].get("shifts") or [unf]
    clean_seeds = by_kind["clean"].get("shifts") or [clean]

    def removed(shift: float | None) -> float | None:
        return removed_share(shift, unf, clean)

    rows = []
    for p in points:
        if p["kind"] not in ("filtered", "random"):
            continue
        rows.append(
            {
                "drop": p["fraction"],
                "method": p["method"],
                "seed": p["seed"],
                "shift": p["shift"],
                "removed": removed(p["shift"]),
                "removed_vs_base": None if p["shift"] is None or not unf else (unf - p["shift"]) / unf,
                "n_records": p["n_records"],
                "n_trait_kept": p["n_trait"],
                "n_trait_dropped": p.get("n_trait_dropped"),
            }
        )
        shifts = p.get("shifts") or [p["shift"]]
        if len(shifts) > 1:
            per_seed = [
                removed_share(s, u, c) for s, u, c in zip(shifts, unf_seeds, clean_seeds, strict=True)
            ]
            rows[-1]["shifts"] = shifts
            rows[-1]["removed_per_seed"] = per_seed
            rows[-1]["removed_sd"] = _sd(per_seed)
    beats: dict[str, Any] = {}
    for drop in sorted({r["drop"] for r in rows}):
        rand = [
            r["shift"]
            for r in rows
            if r["drop"] == drop and r["method"] == "random" and r["shift"] is not None
        ]
        for r in rows:
            if r["drop"] == drop and r["method"] != "random" and r["shift"] is not None and rand:
                beats[f"{r['method']}@{drop:g}"] = all(r["shift"] < s for s in rand)
    table: dict[str, Any] = {
        "unfiltered_shift": unf,
        "clean_shift": clean,
        "rows": rows,
        "beats_every_random_seed": beats,
    }
    if train_seeds is not None and len(train_seeds) > 1:
        table.update(train_seeds=list(train_seeds), unfiltered_shifts=unf_seeds, clean_shifts=clean_seeds)
    return table


def _sd(values: list[float | None]) -> float | None:
    """Sample standard deviation (n - 1), None when a value is missing or there is only one."""
    if len(values) < 2 or any(v is None for v in values):
        return None
    xs = [float(v) for v in values if v is not None]
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
