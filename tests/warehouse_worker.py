"""A resumable pipeline step run as a subprocess by the warehouse tests (kill -9, concurrent readers).

    python tests/warehouse_worker.py ROOT N [--delay S] [--chunk K] [--fail-at I]

Writes N generations and two judgments per generation in a `generate` run whose id depends only on N,
skipping the items the run already committed. Prints `STATUS <status_before>` first.
"""

from __future__ import annotations

import argparse
import sys
import time

from pvdata.warehouse import Warehouse, item_id

SEED = 7


def generation(i: int) -> dict[str, object]:
    gid = item_id("generation", SEED, i)
    return {
        "generation_id": gid,
        "trait": "evil",
        "split": "eval",
        "polarity": "none",
        "question_id": f"q{i % 10}",
        "question": f"question {i % 10}?",
        "prompt_text": f"<prompt {i}>",
        "answer": f"answer number {i}",
        "model_id": "tiny",
        "steering": {
            "mode": "add",
            "vector_id": "v-evil",
            "layers": [3],
            "coef": float(i % 3),
            "positions": "all",
        },
        "sample_index": i,
        "seed": SEED,
        "n_tokens": 10 + i % 7,
    }


def judgments(gid: str, i: int) -> list[dict[str, object]]:
    return [
        {
            "judgment_id": item_id("judgment", gid, metric),
            "generation_id": gid,
            "metric": metric,
            "judge_model": "scripted",
            "score": float((i * 37 + offset) % 100) if i % 11 else None,
            "valid_mass": 0.99,
            "refusal": False,
        }
        for metric, offset in (("evil", 0), ("coherence", 50))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("n", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--fail-at", type=int, default=-1)
    args = parser.parse_args(argv)
    wh = Warehouse(args.root)
    with wh.run("generate", {"n": args.n, "seed": SEED}, model_id="tiny") as run:
        print(f"STATUS {run.status_before} {run.run_id}", flush=True)
        if run.skipped:
            print(run.message, flush=True)
            return 0
        done_g = run.done_ids("generations", "generation_id")
        done_j = run.done_ids("judgments", "generation_id")
        wg = run.writer("generations", chunk_rows=args.chunk)
        wj = run.writer("judgments", chunk_rows=2 * args.chunk)
        for i in range(args.n):
            if i == args.fail_at:
                raise RuntimeError(f"boom at item {i}")
            row = generation(i)
            gid = str(row["generation_id"])
            if gid not in done_g:
                wg.write(row)
            if gid not in done_j:
                wj.write(judgments(gid, i))  # both rows of an item in one call: one file, never half
            if args.delay:
                time.sleep(args.delay)
        run.stats["skipped_items"] = len(done_g)
    return 0


if __name__ == "__main__":
    sys.exit(main())
