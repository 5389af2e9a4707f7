"""Trait files on disk: where they are looked up, how they are read, written and hashed.

Look-up order for a trait given by name: each folder in $PVDATA_TRAITS_PATH (os.pathsep-separated),
then ./traits, then the traits/ folder of this checkout (the traits the project ships). The first
folder holding <name>.yaml (or .yml) wins, so a user's own definition can shadow a shipped one.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pvdata.bundled import TRAITS_DIR
from pvdata.errors import ConfigError
from pvdata.traits.schema import (
    Problem,
    Trait,
    TraitError,
    check_trait_data,
)

TRAITS_PATH_ENV = "PVDATA_TRAITS_PATH"
BUNDLED_DIR = TRAITS_DIR  # traits/ of the checkout, or its copy inside an installed wheel
SUFFIXES = (".yaml", ".yml")
FILE_HEADER = (
    "# A pvdata trait definition (format: docs/TRAITS.md). Bump `version` when you change the content;\n"
    "# check it with `pvdata traits validate`.\n"
)


def content_hash(trait: Trait) -> str:
    """8 hex digits of the sha256 of the trait's canonical JSON (Trait.content_hash)."""
    return trait.content_hash


def trait_dirs(extra: Iterable[str | Path] | None = None) -> list[Path]:
    """The existing trait folders, in look-up order, each once."""
    candidates: list[Path] = [Path(p) for p in (extra or [])]
    candidates += [Path(p) for p in os.environ.get(TRAITS_PATH_ENV, "").split(os.pathsep) if p.strip()]
    candidates += [Path("traits"), BUNDLED_DIR]
    out: list[Path] = []
    seen: set[Path] = set()
    for d in candidates:
        if not d.is_dir():
            continue
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def find_trait_files(dirs: Iterable[str | Path] | None = None) -> dict[str, Path]:
    """name (file stem) -> file, the first folder in look-up order winning."""
    found: dict[str, Path] = {}
    for d in trait_dirs(dirs) if dirs is None else [Path(x) for x in dirs]:
        if not d.is_dir():
            continue
        for suffix in SUFFIXES:
            for path in sorted(d.glob(f"*{suffix}")):
                if path.is_file():
                    found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def list_traits(dirs: Iterable[str | Path] | None = None) -> list[str]:
    """Names of the traits that can be loaded by name, sorted."""
    return list(find_trait_files(dirs))


def display_path(path: Path) -> str:
    """The path relative to the working folder when it is below it, so messages stay short."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _looks_like_path(text: str) -> bool:
    return text.endswith((*SUFFIXES, ".json")) or "/" in text or os.sep in text


def resolve_trait_path(name_or_path: str | Path, dirs: Iterable[str | Path] | None = None) -> Path:
    """The file for a trait name or a path; ConfigError naming the valid traits otherwise."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        path = Path(text)
        if not path.is_file():
            raise ConfigError(
                f"trait file {text} does not exist; give a trait name or the path of a .yaml file"
            )
        return path
    files = find_trait_files(dirs)
    if text in files:
        return files[text]
    where = ", ".join(display_path(d) for d in trait_dirs()) if dirs is None else ", ".join(map(str, dirs))
    known = ", ".join(files) or "none"
    raise ConfigError(
        f"no trait named {text!r} in {where or 'any trait folder'}; known traits: {known}. "
        f"Give a trait name, a path to a .yaml file, or add a folder to ${TRAITS_PATH_ENV}"
    )


def read_trait_data(path: Path) -> tuple[Any, list[Problem]]:
    """The parsed YAML of a trait file, or the problems that stop it being read."""
    source = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(source, "", f"cannot read the file ({exc.strerror or exc})", "check the path")]
    except UnicodeDecodeError:
        return None, [Problem(source, "", "is not UTF-8 text", "save the file as UTF-8")]
    try:
        return yaml.safe_load(text), []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [
            Problem(
                source,
                "",
                f"is not valid YAML{at}: {reason}",
                "quote text that contains ': ' or starts with a quote, '{', '[', '*', '&', '!' or '#'",
            )
        ]


def load_trait(name_or_path: str | Path, dirs: Iterable[str | Path] | None = None) -> Trait:
    """A checked trait by name (looked up in the trait folders) or by file path.

    Raises TraitError listing every problem (file, field, fix) when the file fails a check.
    """
    path = resolve_trait_path(name_or_path, dirs)
    data, problems = read_trait_data(path)
    source = display_path(path)
    if not problems:
        problems = check_trait_data(data, source=source, expected_name=path.stem)
    if problems:
        raise TraitError(problems, summary=f"{source}: {len(problems)} problem(s)")
    return Trait.model_validate(data)


def validate_trait(
    target: Trait | Mapping[str, Any] | str | Path,
    *,
    source: str | None = None,
    dirs: Iterable[str | Path] | None = None,
) -> list[Problem]:
    """Every problem of a trait given as a model, a raw mapping, a name or a file; [] when valid."""
    if isinstance(target, Trait):
        return check_trait_data(target.model_dump(), source=source or f"<trait {target.name}>")
    if isinstance(target, Mapping):
        return check_trait_data(target, source=source or "<trait>")
    try:
        path = resolve_trait_path(target, dirs)
    except ConfigError as exc:
        return [Problem(str(target), "", str(exc), "give an existing trait name or file")]
    data, problems = read_trait_data(path)
    if problems:
        return problems
    return check_trait_data(data, source=source or display_path(path), expected_name=path.stem)


class _Dumper(yaml.SafeDumper):
    """Block styles for long text (the description folded, the rubric literal), so trait files read
    like documents rather than quoted one-liners."""


class _Folded(str):
    """Text to write in folded style (>): one paragraph wrapped over several lines."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style: str | None = None
    if "\n" in value:
        style = "|"
    elif "'" in value and not dumper.analyze_scalar(value).allow_block_plain:
        style = '"'  # double quotes, so apostrophes are not doubled as in single-quoted YAML
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _folded_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = ">" if "\n" not in value else "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style=style)


_Dumper.add_representer(str, _str_representer)
_Dumper.add_representer(_Folded, _folded_representer)


def trait_to_data(trait: Trait) -> dict[str, Any]:
    """The trait as plain data, fields in the documented order."""
    return trait.model_dump(mode="json")


def dump_trait(trait: Trait, fmt: str = "yaml") -> str:
    """The trait in the file format ("yaml", what traits/*.yaml hold) or as JSON."""
    data = trait_to_data(trait)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt != "yaml":
        raise ConfigError(f"format {fmt!r} is not a trait format; formats: yaml, json")
    data["description"] = _Folded(data["description"])
    # No wrapping, so each question and instruction stays on one line (easy to edit and diff) ...
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=_NO_WRAP)
    # ... except the description paragraph, folded at WRAP_WIDTH; kept only if it reads back the same.
    wrapped = _DESCRIPTION_LINE.sub(_wrap_description, text, count=1)
    return wrapped if yaml.safe_load(wrapped) == data else text


_NO_WRAP = 1_000_000
WRAP_WIDTH = 100
_DESCRIPTION_LINE = re.compile(r"^(description: >-?\n)  (\S.*)$", re.MULTILINE)


def _wrap_description(m: re.Match[str]) -> str:
    lines = textwrap.wrap(m.group(2), width=WRAP_WIDTH - 2, break_long_words=False, break_on_hyphens=False)
    return m.group(1) + "\n".join("  " + line for line in lines)


def trait_file(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.yaml"


def save_trait(trait: Trait, out_dir: str | Path, *, force: bool = False) -> Path:
    """Write traits/<name>.yaml atomically after checking it; never overwrite unless force."""
    problems = validate_trait(trait)
    if problems:
        raise TraitError(problems, summary=f"trait {trait.name!r} not saved: {len(problems)} problem(s)")
    path = trait_file(out_dir, trait.name)
    if path.exists() and not force:
        raise ConfigError(f"{display_path(path)} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(FILE_HEADER + dump_trait(trait, "yaml"), encoding="utf-8")
    os.replace(tmp, path)
    return path
