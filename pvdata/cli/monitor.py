"""`pvdata monitor`: prompt_last projections under a ladder of system prompts, next to trait scores."""

from __future__ import annotations

import argparse

from pvdata.cli.options import add_model_options, add_warehouse_option, parse_int_list, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor",
        help="does the last prompt token predict the trait? projections under a system-prompt ladder",
        description="Ask the trait's evaluation questions under system prompts from trait-suppressing to "
        "trait-eliciting, judge the answers, and store the prompt_last projection of every prompt on the "
        "persona vector, so warehouse/queries/projection_vs_score.sql gives the correlation.",
    )
    p.add_argument("--trait", required=True)
    add_model_options(p)
    add_warehouse_option(p)
    p.add_argument(
        "--vector", default=None, help="vector file or warehouse id (default: the trait's latest vector)"
    )
    p.add_argument(
        "--layers",
        default=None,
        help="layers to project at (default: all the vector's layers but 0, the embeddings)",
    )
    p.add_argument(
        "--ladder",
        default=None,
        metavar="FILE",
        help="YAML or JSON list of system prompts, suppressing -> eliciting (null = no system prompt); "
        "default: the trait's neg prompts, no system prompt, its pos prompts",
    )
    p.add_argument("--judge", default="none", help="openai:MODEL | hf:MODEL | none | scripted")
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--n-per-question", type=int, default=1)
    p.add_argument("--temperature", type=float, default=None, help="default: 1.0 when n > 1, else greedy")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-budget", type=int, default=None)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_run)


def read_ladder(path: str) -> list[str | None]:
    """A list of system prompts (strings or null) from a YAML/JSON file; a clear error otherwise."""
    from pathlib import Path

    import yaml

    from pvdata.errors import ConfigError

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--ladder {path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--ladder {path}: not valid YAML/JSON ({exc})") from None
    if not isinstance(data, list) or not all(x is None or isinstance(x, str) for x in data):
        raise ConfigError(f"--ladder {path}: expected a list of system prompts (strings or null)")
    return list(data)


def _run(args: argparse.Namespace) -> int:
    from pvdata.pipelines.monitor import MonitorConfig, run_monitor, summary_lines

    cfg = MonitorConfig(
        trait=args.trait,
        model=args.model,
        vector=args.vector,
        layers=parse_int_list(args.layers, what="--layers") if args.layers else [],
        ladder=read_ladder(args.ladder) if args.ladder else None,
        judge=args.judge,
        questions=args.questions,
        n_per_question=args.n_per_question,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        dtype=args.dtype,
        device=args.device,
        token_budget=args.token_budget,
    )
    result = run_monitor(cfg, warehouse_root(args.warehouse), force=args.force)
    print("\n".join(summary_lines(result, cfg)))
    return 0
