"""`pvdata import csv FILE`: the research code's evaluation CSV into the warehouse."""

from __future__ import annotations

import argparse
import hashlib

from pvdata.cli.options import add_warehouse_option, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("import", help="import other tools' outputs into the warehouse")
    isub = parser.add_subparsers(dest="import_command", metavar="FORMAT", required=True)
    p = isub.add_parser("csv", help="a research-code evaluation CSV as generations + judgments")
    add_warehouse_option(p)
    p.add_argument("file")
    p.add_argument("--trait", default=None, help="the trait score column (default: the only extra column)")
    p.add_argument("--model-id", default="unknown", help="the model that wrote the answers")
    p.add_argument("--judge-model", default="imported", help="the judge that scored them")
    p.add_argument("--force", action="store_true", help="import again as a new run")
    p.set_defaults(func=_csv)


def _csv(args: argparse.Namespace) -> int:
    from pvdata.importers.research_csv import import_rows, read_research_csv
    from pvdata.warehouse import Warehouse

    trait, rows = read_research_csv(args.file, args.trait)  # validates everything before a run starts
    with open(args.file, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:16]
    config = {"format": "research-csv", "sha256": digest, "trait": trait, "judge_model": args.judge_model}
    wh = Warehouse(warehouse_root(args.warehouse))
    with wh.run("import", config, model_id=args.model_id, force=args.force) as run:
        if run.skipped:
            print(run.message)
            return 0
        # the two tables commit separately, so each is resumed by its own ids (exactly once per row)
        done_g = run.done_ids("generations", "generation_id")
        done_j = run.done_ids("judgments", "judgment_id")
        gens, judg = run.writer("generations"), run.writer("judgments")
        n_new = 0
        for generation, judgments in import_rows(
            trait, rows, source=digest, model_id=args.model_id, judge_model=args.judge_model
        ):
            todo = [j for j in judgments if j["judgment_id"] not in done_j]
            if todo:
                judg.write(todo)
            if generation["generation_id"] not in done_g:
                gens.write(generation)
                n_new += 1
        run.stats.update({"rows": len(rows), "new": n_new, "trait": trait})
    print(f"imported {len(rows)} rows of {args.file} (trait {trait}) as run {run.run_id}")
    return 0
