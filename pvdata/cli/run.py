"""`pvdata run FILE`: execute a pipeline file (pipelines/*.yaml); `--validate` checks it and stops."""

from __future__ import annotations

import argparse

from pvdata.cli.options import add_warehouse_option, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a pipeline file (extract, evaluate, monitor steps ...) or --validate it",
        description="Run the steps of a pipeline YAML file in order. The whole file is checked before any "
        "model loads; rerunning a file resumes it and skips the steps that already succeeded.",
    )
    p.add_argument("file", help="pipeline YAML, e.g. pipelines/evil-smollm2.yaml")
    p.add_argument("--validate", action="store_true", help="check the file (no model is loaded) and exit")
    p.add_argument("--force", action="store_true", help="recompute every step as new runs")
    add_warehouse_option(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pvdata.pipelines.spec import load_pipeline

    spec = load_pipeline(args.file)
    if args.validate:
        print(f"{spec.path}: ok, pipeline {spec.name!r}, {len(spec.steps)} step(s)")
        for step in spec.steps:
            fields = ", ".join(f"{k}={v}" for k, v in _set_fields(step.config).items())
            print(f"  line {step.line}: {step.kind} ({step.id}): {fields}")
        return 0
    from pvdata.pipelines.runner import run_pipeline

    run_pipeline(spec, warehouse_root(args.warehouse or spec.warehouse), force=args.force)
    return 0


def _set_fields(config: object) -> dict[str, object]:
    """The fields that differ from their defaults (what the file actually sets)."""
    import dataclasses

    from pvdata.experiments.step import ExperimentStep
    from pvdata.pipelines.spec import ScreenStep

    if isinstance(config, ScreenStep):
        return {**_set_fields(config.config), **({"out": config.out} if config.out else {})}
    if isinstance(config, ExperimentStep):  # the experiment's own fields, then the shared ones flattened
        inner = {k: v for k, v in _set_fields(config.config).items() if k != "common"}
        return {
            "experiment": config.experiment,
            **inner,
            **_set_fields(config.config.common),
            **({"out": config.out} if config.out else {}),
        }
    dump = getattr(config, "model_dump", None)
    if dump is not None:  # pydantic (training): the non-default fields, nested sections flattened
        flat: dict[str, object] = {}

        def walk(prefix: str, node: object) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(f"{prefix}{key}.", value)
            else:
                flat[prefix[:-1]] = node

        walk("", dump(exclude_defaults=True, mode="json"))
        return flat
    out = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING:
            changed = value != f.default
        elif f.default_factory is not dataclasses.MISSING:
            changed = value != f.default_factory()
        else:
            changed = True  # a required field
        if changed:
            out[f.name] = value
    return out
