"""`pvdata evaluate`: judged evaluation answers, unsteered, with an adapter, or over a steering grid."""

from __future__ import annotations

import argparse

from pvdata.cli.options import add_model_options, add_warehouse_option, parse_int_list, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="trait and coherence of answers: unsteered, adapter, or a steering sweep"
    )
    p.add_argument("--trait", required=True)
    add_model_options(p)
    add_warehouse_option(p)
    p.add_argument("--adapter", default=None, help="LoRA adapter folder to evaluate")
    p.add_argument(
        "--vector",
        default=None,
        help="vector file or warehouse id (prefix) to steer with (default with --layers: the trait's latest "
        "vector for this model)",
    )
    p.add_argument(
        "--coefs", default="0", help="steering coefficients, e.g. 0,1,2 or -2,0,2 (negative: away)"
    )
    p.add_argument(
        "--layers",
        default=None,
        help="layers to steer, one cell per layer x coef, e.g. 10,15,20 (default: none, only the unsteered "
        "baseline; --vector needs it)",
    )
    p.add_argument("--positions", choices=["response", "prompt", "all"], default="response")
    p.add_argument("--judge", default="none", help="openai:MODEL | hf:MODEL | none | scripted")
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--n-per-question", type=int, default=10)
    p.add_argument("--temperature", type=float, default=None, help="default: 1.0 when n > 1, else greedy")
    p.add_argument("--max-new-tokens", type=int, default=1000)
    p.add_argument("--coherence-floor", type=float, default=50.0, help="layer choice ignores cells below it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-budget", type=int, default=None)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_run)


def _coefs(text: str) -> list[float]:
    from pvdata.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--coefs {text!r} is not a list of numbers like 0,1.5,3") from None


def _run(args: argparse.Namespace) -> int:
    from pvdata.pipelines.evaluate import EvaluateConfig, run_evaluate, summary_lines

    cfg = EvaluateConfig(
        trait=args.trait,
        model=args.model,
        adapter=args.adapter,
        vector=args.vector,
        coefs=_coefs(args.coefs),
        layers=parse_int_list(args.layers, what="--layers") if args.layers else [],
        positions=args.positions,
        judge=args.judge,
        questions=args.questions,
        n_per_question=args.n_per_question,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        coherence_floor=args.coherence_floor,
        dtype=args.dtype,
        device=args.device,
        token_budget=args.token_budget,
    )
    result = run_evaluate(cfg, warehouse_root(args.warehouse), force=args.force)
    print("\n".join(summary_lines(result, cfg)))
    return 0
