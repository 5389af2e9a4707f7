"""`pvdata generate`: answers to a JSONL file of prompts, one generations row per (prompt, sample).

Validates the flags, the prompts file and the vector before loading any model, and checks whether the
same run already succeeded (then it only prints that) before loading one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pvdata.cli.options import add_model_options, add_warehouse_option, parse_int_list, warehouse_root
from pvdata.errors import ConfigError

POSITIONS = ("all", "prompt", "response")
MODES = ("add", "ablate")
SPLITS = ("extract", "eval", "dataset_base")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "generate",
        help="generate answers to a JSONL file of prompts (optionally steered or with a LoRA adapter)",
        description="Generate n answers per prompt into the generations table of a 'generate' run. "
        "Rerunning the same command resumes an interrupted run and does nothing for a finished one.",
    )
    add_model_options(parser, default="")  # not required: openai:MODEL names the model itself
    parser.add_argument(
        "--prompts",
        required=True,
        metavar="FILE",
        help='JSONL: {"question": ..., "question_id"?: ..., "system"?: ...} or {"messages": [...]} per line',
    )
    parser.add_argument(
        "--backend",
        default="hf",
        help="hf (transformers; default) | vllm (offline vLLM, the vllm extra) | openai:MODEL (an "
        "OpenAI-compatible server at $OPENAI_BASE_URL; unsteered) | auto (vllm when installed, on a GPU "
        "and unsteered, else hf)",
    )
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (default 1)")
    parser.add_argument(
        "--temperature", type=float, default=None, help="default: 1.0 when --n > 1, else 0 (greedy)"
    )
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--system", default=None, help="system prompt for the prompts that do not bring their own"
    )
    steer = parser.add_argument_group("steering (hf and vllm backends)")
    steer.add_argument("--vector", default=None, metavar="FILE", help="persona vector file to steer with")
    steer.add_argument(
        "--layers",
        default=None,
        help="layers to steer, e.g. 20 or 16,20 or 10-20 (no default: --vector needs it)",
    )
    steer.add_argument("--coef", type=float, default=1.0, help="steering coefficient (mode add)")
    steer.add_argument("--positions", choices=POSITIONS, default="all")
    steer.add_argument("--mode", choices=MODES, default="add")
    steer.add_argument(
        "--incremental", action="store_true", help="steer with v[l] - v[l-1] (for many-layer steering)"
    )
    parser.add_argument("--adapter", default=None, metavar="PATH", help="LoRA adapter folder")
    parser.add_argument("--trait", default=None, help="trait name recorded on each row")
    parser.add_argument("--split", choices=SPLITS, default="eval", help="split recorded on each row")
    parser.add_argument(
        "--chunk-size", type=int, default=128, help="prompts generated and committed per chunk (resume unit)"
    )
    parser.add_argument("--token-budget", type=int, default=None, help="hf: padded tokens per generate call")
    parser.add_argument("--concurrency", type=int, default=16, help="openai: requests in flight")
    parser.add_argument(
        "--no-server-n",
        dest="server_n",
        action="store_false",
        help="openai: one request per sample instead of the n parameter (llama.cpp, Ollama)",
    )
    parser.add_argument("--force", action="store_true", help="recompute as a new run even if it succeeded")
    add_warehouse_option(parser)
    parser.set_defaults(func=run_generate)


def _steering(args: argparse.Namespace) -> tuple[Any, Any]:
    """(SteeringSpec or None, vector or None), validated before any model is loaded."""
    steer_flags = args.layers is not None or args.mode != "add" or args.positions != "all" or args.incremental
    if args.vector is None:
        if steer_flags:
            raise ConfigError(
                "--layers/--mode/--positions/--incremental steer with a vector: add --vector FILE"
            )
        return None, None
    if args.layers is None:
        raise ConfigError("--vector needs --layers: the layers to steer, e.g. --layers 20")
    from pvdata.steering.spec import SteeringSpec
    from pvdata.vectors import PersonaVector

    vector = PersonaVector.load(args.vector)
    spec = SteeringSpec(
        mode=args.mode,
        layers=tuple(parse_int_list(args.layers, what="--layers")),
        coef=args.coef,
        positions=args.positions,
        incremental=args.incremental,
        vector_id=vector.vector_id,
    )
    return spec, vector


def run_generate(args: argparse.Namespace) -> int:
    from pvdata.generation.backends import backend_kind, make_backend, resolve_backend
    from pvdata.generation.base import SamplingParams
    from pvdata.generation.pipeline import run_generation
    from pvdata.generation.prompts import read_prompts
    from pvdata.warehouse import Warehouse

    if backend_kind(args.backend) == "auto":  # resolved first: the run records the backend that answers
        from pvdata.models.loading import resolve_device

        steered = args.vector is not None or args.layers is not None
        args.backend = resolve_backend(args.backend, resolve_device(args.device), steered=steered)
    kind = backend_kind(args.backend)
    if kind == "openai":
        if args.vector is not None or args.layers is not None:
            from pvdata.generation.openai_compat import STEERING_ERROR

            raise ConfigError(STEERING_ERROR)
        model_id = args.backend.removeprefix("openai:").strip()
        if args.model and args.model != model_id:
            raise ConfigError(
                f"--model {args.model!r} and --backend {args.backend!r} name different models: with an "
                "OpenAI-compatible server the model is the one after 'openai:'; drop --model"
            )
    else:
        if not args.model:
            raise ConfigError(f"--backend {kind} needs --model (an alias, a local folder or a hub id)")
        model_id = args.model
    if args.chunk_size < 1:
        raise ConfigError(f"--chunk-size {args.chunk_size} must be >= 1")
    params = SamplingParams(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    items = read_prompts(args.prompts, system=args.system)
    spec, vector = _steering(args)

    def build() -> Any:
        print(f"generate: loading {args.backend} backend for {model_id}", file=sys.stderr, flush=True)
        return make_backend(
            args.backend,
            model=args.model,
            adapter=args.adapter,
            dtype=args.dtype,
            device=args.device,
            layers_path=args.layers_path,
            steering=spec,
            vector=vector,
            token_budget=args.token_budget,
            concurrency=args.concurrency,
            server_n=args.server_n,
        )

    wh = Warehouse(warehouse_root(args.warehouse))
    outcome = run_generation(
        wh,
        backend_spec=args.backend if kind != "openai" else "openai:" + model_id,
        model_id=model_id,
        adapter=args.adapter,
        items=items,
        params=params,
        steering=spec.to_json() if spec is not None else None,
        make_backend=build,
        trait=args.trait,
        split=args.split,
        force=args.force,
        chunk_size=args.chunk_size,
    )
    if outcome.status == "already_succeeded":
        print(f"generate: {outcome.message}")
    else:
        rate = outcome.tokens / outcome.seconds if outcome.seconds > 0 else 0.0
        print(
            f"generate: {outcome.rows_written} rows written ({outcome.prompts_generated} prompts x "
            f"{params.n} samples), {outcome.rows_skipped} already committed, {outcome.tokens} tokens in "
            f"{outcome.seconds:.1f} s ({rate:.1f} tokens/s)"
        )
        print(
            f'query: pvdata sql "SELECT question_id, sample_index, answer FROM generations '
            f"WHERE run_id = '{outcome.run_id}'\""
        )
    print(f"run_id: {outcome.run_id}")
    return 0
