"""`pvdata traits list|show|validate|import|new`: the trait definitions that extraction and judging use.

validate checks everything before any GPU work; import converts the research code's files; new drafts
a trait with an LLM and saves it only once it passes the same checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError

DEFAULT_OUT = "traits"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "traits",
        help="list, show, check, import and generate trait definitions",
        description="Trait definitions (traits/<name>.yaml): 5 instruction pairs, 20 extraction and 20 "
        "evaluation questions, and a judge rubric. See docs/TRAITS.md.",
    )
    actions = parser.add_subparsers(dest="traits_command", metavar="ACTION", required=True)

    p_list = actions.add_parser("list", help="the traits that can be used by name")
    p_list.add_argument("--format", choices=("table", "json"), default="table")
    p_list.set_defaults(func=run_list)

    p_show = actions.add_parser("show", help="one trait in full")
    p_show.add_argument("name", metavar="NAME", help="a trait name or the path of a trait file")
    p_show.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p_show.set_defaults(func=run_show)

    p_val = actions.add_parser(
        "validate",
        help="check trait files (counts, duplicates, overlap, placeholders, fields); exit 2 on problems",
    )
    p_val.add_argument("targets", nargs="*", metavar="NAME|FILE", help="traits to check (default: all)")
    p_val.set_defaults(func=run_validate)

    p_imp = actions.add_parser(
        "import",
        help="convert the research code's trait files (extract/<trait>.json + eval/<trait>.json)",
        description="Convert research-code trait files into this project's YAML format. DIR holds "
        "extract/<trait>.json and eval/<trait>.json, or <trait>.json with eval/<trait>.json. Every trait "
        "is checked before anything is written.",
    )
    p_imp.add_argument("dir", metavar="DIR")
    p_imp.add_argument(
        "--out", default=DEFAULT_OUT, help="folder to write <trait>.yaml into (default: traits)"
    )
    p_imp.add_argument(
        "--trait", action="append", dest="names", metavar="NAME", help="import only this trait"
    )
    p_imp.add_argument("--version", type=int, default=1, help="version to give the imported traits")
    p_imp.add_argument("--force", action="store_true", help="overwrite existing trait files")
    p_imp.set_defaults(func=run_import)

    p_new = actions.add_parser(
        "new",
        help="draft a trait with an LLM from a name and a description",
        description="Ask an OpenAI-compatible model (OPENAI_API_KEY, OPENAI_BASE_URL) for the instruction "
        "pairs, questions and rubric as JSON; check the reply, retry once with the problems, save it.",
    )
    p_new.add_argument("name", metavar="NAME", help="trait name: lower-case letters, digits, '_' or '-'")
    p_new.add_argument("--description", required=True, help="one paragraph saying what the trait is")
    p_new.add_argument(
        "--judge", required=True, metavar="openai:MODEL", help="the model that drafts the trait"
    )
    p_new.add_argument("--pos-name", help="adjective for 'You are a/an ___ assistant' (default: the model's)")
    p_new.add_argument(
        "--neg-name", help="its antonym (default: antonym table, else the model's, else helpful)"
    )
    p_new.add_argument("--base-url", help="OpenAI-compatible server (default: $OPENAI_BASE_URL, else OpenAI)")
    p_new.add_argument("--version", type=int, default=1)
    p_new.add_argument(
        "--out", default=DEFAULT_OUT, help="folder to write <name>.yaml into (default: traits)"
    )
    p_new.add_argument("--force", action="store_true", help="overwrite an existing trait file")
    p_new.set_defaults(func=run_new)


def _first_line(text: str, limit: int = 72) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(columns), "  ".join("-" * w for w in widths), *(line(r) for r in cells)])


def run_list(args: argparse.Namespace) -> int:
    from pvdata.traits import TraitError, find_trait_files, load_trait
    from pvdata.traits.store import display_path

    rows: list[dict[str, Any]] = []
    for name, path in find_trait_files().items():
        try:
            t = load_trait(path)
        except TraitError as exc:
            rows.append(
                {
                    "name": name,
                    "version": None,
                    "pairs": None,
                    "extract": None,
                    "eval": None,
                    "trait_version": None,
                    "description": f"INVALID ({len(exc.problems)} problems): pvdata traits validate {name}",
                    "path": display_path(path),
                }
            )
            continue
        rows.append(
            {
                "name": t.name,
                "version": t.version,
                "pairs": len(t.instructions),
                "extract": len(t.questions.extract),
                "eval": len(t.questions.eval),
                "trait_version": t.trait_version,
                "description": t.description,
                "path": display_path(path),
            }
        )
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no traits found (looked in $PVDATA_TRAITS_PATH, ./traits and the bundled traits/)")
        return 0
    columns = ("name", "version", "pairs", "extract", "eval", "description")
    print(
        _table(
            columns,
            [
                [r["name"], "?" if r["version"] is None else f"v{r['version']}"]
                + ["-" if r[c] is None else r[c] for c in ("pairs", "extract", "eval")]
                + [_first_line(r["description"])]
                for r in rows
            ],
        )
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    from pvdata.traits import dump_trait, load_trait, resolve_trait_path
    from pvdata.traits.store import display_path

    path = resolve_trait_path(args.name)
    trait = load_trait(path)
    if args.format == "json":
        sys.stdout.write(dump_trait(trait, "json"))
    else:
        sys.stdout.write(f"# {trait.trait_version} ({display_path(path)})\n" + dump_trait(trait, "yaml"))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from pvdata.traits import find_trait_files, validate_trait
    from pvdata.traits.store import display_path

    targets: list[str | Path] = list(args.targets) or list(find_trait_files().values())
    if not targets:
        raise ConfigError(
            "no trait files to check (looked in $PVDATA_TRAITS_PATH, ./traits, bundled traits/)"
        )
    bad = 0
    total = 0
    for target in targets:
        problems = validate_trait(target)
        label = display_path(target) if isinstance(target, Path) else str(target)
        if problems:
            bad += 1
            total += len(problems)
            print(f"FAIL {label}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
        else:
            from pvdata.traits import load_trait

            print(f"ok   {label} ({load_trait(target).trait_version})")
    if bad:
        raise ConfigError(f"{total} problem(s) in {bad} of {len(targets)} trait file(s), listed above")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from pvdata.traits import import_research_dir, save_trait
    from pvdata.traits.store import display_path, trait_file

    traits = import_research_dir(args.dir, names=args.names, version=args.version)
    existing = [
        display_path(trait_file(args.out, t.name)) for t in traits if trait_file(args.out, t.name).exists()
    ]
    if existing and not args.force:
        raise ConfigError(
            f"{', '.join(existing)} already exist(s); pass --force to overwrite, or --out another folder"
        )
    for t in traits:
        path = save_trait(t, args.out, force=args.force)
        print(
            f"imported {t.name} -> {display_path(path)} ({t.trait_version}; pos_name {t.pos_name}, "
            f"neg_name {t.neg_name})"
        )
    return 0


def run_new(args: argparse.Namespace) -> int:
    import functools

    from pvdata.traits import save_trait
    from pvdata.traits.generator import generate_trait, openai_complete, parse_model_spec
    from pvdata.traits.schema import NAME_RE
    from pvdata.traits.store import display_path, trait_file

    model = parse_model_spec(args.judge)
    if not NAME_RE.match(args.name):
        raise ConfigError(
            f"{args.name!r} is not a trait name; use lower-case letters, digits, '_' or '-', "
            "starting with a letter"
        )
    target = trait_file(args.out, args.name)
    if target.exists() and not args.force:
        raise ConfigError(f"{display_path(target)} already exists; pass --force to overwrite it")
    from pvdata.remote import require_api_key

    require_api_key()  # fail before the request, with the variable to set
    print(f"asking {model} for trait {args.name!r} ...", file=sys.stderr)
    trait = generate_trait(
        args.name,
        args.description,
        model,
        complete=functools.partial(openai_complete, base_url=args.base_url),
        version=args.version,
        pos_name=args.pos_name,
        neg_name=args.neg_name,
    )
    path = save_trait(trait, args.out, force=args.force)
    print(
        f"saved {display_path(path)} ({trait.trait_version}); review it, then: "
        f"pvdata traits validate {args.name}"
    )
    return 0
