"""The printed report of an experiment (summary.json holds the same numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:+.3f}" if isinstance(x, float) else str(x)


def summary_lines(summary: dict[str, Any], out: Path) -> list[str]:
    """What `pvdata experiment` prints: every dataset, the correlations, the filter table."""
    lines: list[str] = []
    add = lines.append
    add(f"experiment run {summary['run_id']}")
    add(f"{'dataset':<34} {'n':>4} {'trait':>5} {'pd_exact':>9} {'pd_approx':>9} {'raw':>9} {'shift':>9}")
    for d in summary["datasets"]:
        add(
            f"{d['dataset']:<34} {d['n_records']:>4} {d['n_trait']:>5} "
            f"{_num(d['projection_difference_exact']):>9} {_num(d['projection_difference_approx']):>9} "
            f"{_num(d['raw_projection']):>9} {_num(d['shift']):>9}"
        )
    for key, value in summary.items():
        if isinstance(value, dict) and "spearman" in value:
            lo, hi = value["spearman_ci95"]
            add(
                f"{key}: pearson {_num(value['pearson'])}, spearman {_num(value['spearman'])} "
                f"[{_num(lo)}, {_num(hi)}] over {value['n_datasets']} datasets"
            )
    for trait, sep in (summary.get("separation") or {}).items():
        for method, by_layer in sep["auroc"].items():
            cells = ", ".join(f"L{layer} {v:.3f}" for layer, v in by_layer.items())
            add(f"{trait} {method}: AUROC trait vs normal {cells}")
    if "filter" in summary:
        table = summary["filter"]
        add(f"unfiltered shift {_num(table['unfiltered_shift'])}, clean shift {_num(table['clean_shift'])}")
        if "train_seeds" in table:
            seeds = ",".join(map(str, table["train_seeds"]))
            add(f"  (means over training seeds {seeds}; removed +- its sd over the seeds, paired per seed)")
        for r in table["rows"]:
            seed = "" if r["seed"] is None else f" seed {r['seed']}"
            spread = "" if r.get("removed_sd") is None else f" +- {r['removed_sd']:.3f}"
            add(
                f"  drop {r['drop']:g} by {r['method']}{seed}: shift {_num(r['shift'])}, removed "
                f"{_num(r['removed'])}{spread}, trait samples dropped {r['n_trait_dropped']}"
            )
    add(f"wrote {out / 'summary.json'}")
    return lines
