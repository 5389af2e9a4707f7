"""Measure an executor's throughput on a dataset, for sizing a cluster (docs/SCALE.md).

    python -m pvdata.executors.probe pvdata/data/demo_chat.jsonl --model smollm2-135m --step score
    python -m pvdata.executors.probe DATA --model M --step generate --executor ray --num-workers 1 \\
        --gpus-per-worker 1 --max-new-tokens 256

Runs one heavy step over the dataset's distinct samples, exactly as `pvdata screen` runs it, and writes
nothing: `score` is the projection step (prompt_last_approx + raw: one forward pass per sample, onto a
random vector of the model's shape unless --vector is given: the values do not change the cost);
`generate` is the greedy base answers of method exact (one per distinct prompt). Prints one JSON line:
setup_s (model load, or cluster start), first_chunk_s (until the first chunk came back: includes the
workers loading the model), steady_per_s (items per second once results flow) and per_worker_per_s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any


def _parser() -> argparse.ArgumentParser:
    from pvdata.cli.options import add_executor_options

    p = argparse.ArgumentParser(prog="python -m pvdata.executors.probe", description=__doc__.split("\n")[0])
    p.add_argument("dataset")
    p.add_argument("--model", required=True)
    p.add_argument("--step", choices=["score", "generate"], default="score")
    p.add_argument("--vector", default=None, help="a vector file (default: random, of the model's shape)")
    p.add_argument("--layer", type=int, default=None, help="default: 0.75 of the depth, as pvdata screen")
    p.add_argument("--chunk-size", type=int, default=8, help="small: more chunks to time (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--token-budget", type=int, default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-invalid", action="store_true", help="time the valid records only")
    add_executor_options(p)
    return p


def probe(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pvdata.cli.options import executor_kwargs
    from pvdata.executors import (
        ExecutorConfig,
        GenerateJob,
        LocalExecutor,
        ScoreJob,
        generate_stream,
        model_facts,
        worker_model,
    )
    from pvdata.generation.base import SamplingParams
    from pvdata.pipelines.screen import DEFAULT_DEPTH, base_prompts, score_inputs
    from pvdata.samples import check_invalid, read_dataset
    from pvdata.vectors import PersonaVector

    kw = executor_kwargs(args)
    ec = ExecutorConfig(
        kw["executor"],
        kw["ray_address"],
        kw["num_workers"],
        kw["gpus_per_worker"],
        kw["cpus_per_worker"],
        kw["worker_retries"],
    )
    ec.check(args.device)
    spec = worker_model(args.model, args.dtype, args.device, ec)
    facts = model_facts(spec)
    data = read_dataset(args.dataset)
    check_invalid(data, args.skip_invalid)  # as `pvdata screen`: bad records stop it unless skipped
    if args.vector:
        vector = PersonaVector.load(args.vector)
    else:
        values = torch.randn(
            facts.n_layers + 1, facts.hidden_size, generator=torch.Generator().manual_seed(0)
        )
        vector = PersonaVector(
            trait="probe", model_id=args.model, values=values, pooling="response_avg", method="random"
        )
    layer = args.layer if args.layer is not None else int(DEFAULT_DEPTH * facts.n_layers + 0.5)
    executor: Any
    t = time.monotonic()
    if ec.name == "local":
        executor = LocalExecutor(model=spec)
        executor.lm()
    else:
        from pvdata.executors.ray_exec import RayExecutor

        executor = RayExecutor(ec, spec, log=lambda _m: None, facts=facts)
        executor.start()
    setup = time.monotonic() - t
    arrivals: list[tuple[float, int]] = []
    start = time.monotonic()
    try:
        if args.step == "score":
            samples = score_inputs(data, {})
            job = ScoreJob((vector,), [layer], ("prompt_last_approx", "raw"), args.token_budget)
            for part in executor.score(job, samples, chunk=args.chunk_size):
                arrivals.append((time.monotonic(), len(part.samples)))
            n = len(samples)
        else:
            items = base_prompts(data)
            params = SamplingParams(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens)
            backend = executor.generation_backend(GenerateJob("hf", args.token_budget, args.dtype))
            requests = [i.request for i in items]
            for group in generate_stream(backend, requests, params, chunk=args.chunk_size):
                arrivals.append((time.monotonic(), len({r.request_index for r in group})))
            n = len(items)
    finally:
        executor.close()
    end = time.monotonic()
    first = arrivals[0][0] if arrivals else end
    workers = ec.num_workers if ec.name == "ray" else 1
    # items already computed when the first result arrived: locally the first chunk; on Ray about two
    # chunks per worker (Ray Data hands a chunk's result over once that worker finished its next one)
    before = min(n, args.chunk_size * (2 * workers if ec.name == "ray" else 1))
    steady = (n - before) / (end - first) if n > before and end > first else None
    return {
        "executor": ec.describe(),
        "step": args.step,
        "model": args.model,
        "dtype": spec.dtype,
        "device": spec.device,
        "items": n,
        "chunks": len(arrivals),
        "setup_s": round(setup, 1),
        "first_chunk_s": round(first - start, 1),
        "wall_s": round(end - start, 1),
        "overall_per_s": round(n / (end - start), 2),
        "steady_per_s": None if steady is None else round(steady, 2),
        "per_worker_per_s": None if steady is None else round(steady / workers, 2),
        "loadavg": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    from pvdata.errors import PvdataError

    args = _parser().parse_args(argv)
    try:
        print(json.dumps(probe(args)))
    except PvdataError as exc:
        print(f"probe: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
