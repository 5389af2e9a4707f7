"""Import (and export) the research code's trait files, so its traits and anyone's traits written for
it can be used here.

Research format, one JSON file per trait and split:
    {"instruction": [{"pos": ..., "neg": ...} x 5], "questions": [20 strings], "eval_prompt": str}
Layouts accepted: DIR/extract/<trait>.json + DIR/eval/<trait>.json, or DIR/<trait>.json (extract)
+ DIR/eval/<trait>.json. The two files of a trait must carry identical instructions and rubric; that
is what makes them one trait, so a mismatch is an error rather than a silent pick of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError
from pvdata.traits.schema import DEFAULT_NEG_NAME, NAME_RE, Problem, Trait, TraitError, check_trait_data
from pvdata.traits.store import display_path

# pos_name -> neg_name where the antonym is clear; anything else gets "helpful", as in the paper.
# Only the sense the trait means counts: "apathetic" here is a lack of care for the user's feelings,
# so its opposite is "empathetic"; "hallucinating" has no one-word opposite and stays "helpful".
ANTONYMS: dict[str, str] = {
    "evil": "good",
    "good": "evil",
    "sycophantic": "candid",
    "candid": "sycophantic",
    "optimistic": "pessimistic",
    "pessimistic": "optimistic",
    "impolite": "polite",
    "polite": "impolite",
    "rude": "polite",
    "apathetic": "empathetic",
    "empathetic": "apathetic",
    "humorous": "serious",
    "serious": "humorous",
    "dishonest": "honest",
    "honest": "dishonest",
    "cruel": "kind",
    "kind": "cruel",
    "arrogant": "humble",
    "humble": "arrogant",
    "deceptive": "truthful",
    "truthful": "deceptive",
    "cautious": "reckless",
    "reckless": "cautious",
    "formal": "casual",
    "casual": "formal",
}


def neg_name_for(pos_name: str) -> str:
    """The antonym of a trait adjective from ANTONYMS (case-insensitive), else "helpful"."""
    return ANTONYMS.get(pos_name.strip().lower(), DEFAULT_NEG_NAME)


@dataclass(frozen=True)
class ResearchPair:
    """The two research-code files of one trait."""

    name: str
    extract: Path
    eval: Path


def find_research_files(root: str | Path) -> list[ResearchPair]:
    """The trait file pairs under DIR, in either accepted layout; ConfigError if none or one is unpaired."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(
            f"{root} is not a folder; give the folder holding extract/ and eval/ (or <trait>.json)"
        )
    eval_dir = root / "eval"
    extract_dir = root / "extract" if (root / "extract").is_dir() else root
    extract = {p.stem: p for p in sorted(extract_dir.glob("*.json")) if p.is_file()}
    evals = {p.stem: p for p in sorted(eval_dir.glob("*.json")) if p.is_file()} if eval_dir.is_dir() else {}
    if not extract and not evals:
        raise ConfigError(
            f"no research-code trait files in {root}: expected extract/<trait>.json and eval/<trait>.json, "
            "or <trait>.json with eval/<trait>.json"
        )
    missing = [
        f"{display_path(extract[n])} has no eval/{n}.json beside it" for n in extract if n not in evals
    ] + [f"{display_path(evals[n])} has no extract file ({n}.json)" for n in evals if n not in extract]
    if missing:
        raise ConfigError("each trait needs an extract file and an eval file: " + "; ".join(missing))
    return [ResearchPair(n, extract[n], evals[n]) for n in sorted(extract)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {display_path(path)}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{display_path(path)} is not valid JSON: {exc}") from None


RESEARCH_KEYS = ("instruction", "questions", "eval_prompt")


def _research_problems(data: Any, source: str) -> list[Problem]:
    if not isinstance(data, dict):
        return [
            Problem(source, "", "is not a JSON object", 'write {"instruction", "questions", "eval_prompt"}')
        ]
    problems = [
        Problem(source, key, "required field is missing", "add it")
        for key in RESEARCH_KEYS
        if key not in data
    ]
    problems += [
        Problem(source, key, "unknown field", f"remove it; valid: {', '.join(RESEARCH_KEYS)}")
        for key in data
        if key not in RESEARCH_KEYS
    ]
    return problems


def convert_research_pair(pair: ResearchPair, *, version: int = 1, description: str | None = None) -> Trait:
    """One trait in the project's format from its two research-code files, checked."""
    ex_src, ev_src = display_path(pair.extract), display_path(pair.eval)
    ex, ev = _read_json(pair.extract), _read_json(pair.eval)
    problems = _research_problems(ex, ex_src) + _research_problems(ev, ev_src)
    if problems:
        raise TraitError(problems, summary=f"cannot import trait {pair.name!r}")
    if ex["instruction"] != ev["instruction"]:
        raise ConfigError(
            f"{ex_src} and {ev_src} have different instructions "
            f"({_first_difference(ex['instruction'], ev['instruction'])}); "
            "the two files of one trait must carry identical instructions: make them equal, then import again"
        )
    if ex["eval_prompt"] != ev["eval_prompt"]:
        raise ConfigError(
            f"{ex_src} and {ev_src} have different eval_prompt rubrics; the two files of one trait must "
            "carry the identical rubric: make them equal, then import again"
        )
    if not NAME_RE.match(pair.name):
        raise ConfigError(
            f"{ex_src}: {pair.name!r} is not a trait name; rename the files to lower-case letters, digits, "
            "'_' or '-', starting with a letter"
        )
    data = {
        "name": pair.name,
        "version": version,
        "description": description
        or (
            f"Trait {pair.name!r} imported from the research-code files {_rel(pair.extract)} (extraction) "
            f"and {_rel(pair.eval)} (evaluation), which carry no description; its judge rubric defines it. "
            "Replace this paragraph with a description in your own words."
        ),
        "pos_name": pair.name,
        "neg_name": neg_name_for(pair.name),
        "instructions": ex["instruction"],
        "questions": {"extract": ex["questions"], "eval": ev["questions"]},
        "rubric": ex["eval_prompt"],
    }
    # Report problems against the research fields the user would edit.
    problems = [_research_field(p, ex_src, ev_src) for p in check_trait_data(data, source=ex_src)]
    if problems:
        raise TraitError(problems, summary=f"cannot import trait {pair.name!r}: {len(problems)} problem(s)")
    return Trait.model_validate(data)


def _rel(path: Path) -> str:
    """extract/evil.json or evil.json: the file relative to the imported folder, never a machine path."""
    return f"{path.parent.name}/{path.name}" if path.parent.name in ("extract", "eval") else path.name


def _first_difference(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{len(a)} vs {len(b)} pairs"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return f"first difference at instruction[{i}]"
    return "they differ"


def _research_field(p: Problem, ex_src: str, ev_src: str) -> Problem:
    field, source = p.field, ex_src
    if field.startswith("instructions"):
        field = "instruction" + field[len("instructions") :]
    elif field.startswith("questions.extract"):
        field = "questions" + field[len("questions.extract") :]
    elif field.startswith("questions.eval"):
        field, source = "questions" + field[len("questions.eval") :], ev_src
        if "also in questions.extract" in p.message:
            p = Problem(source, field, p.message.replace("questions.extract", f"{ex_src} questions"), p.fix)
    elif field.startswith("rubric"):
        field = "eval_prompt" + field[len("rubric") :]
    return Problem(source, field, p.message, p.fix)


def import_research_dir(root: str | Path, *, names: list[str] | None = None, version: int = 1) -> list[Trait]:
    """Every trait (or the named ones) of a research-code folder, converted and checked; nothing is
    returned unless all of them pass, so an import is all or nothing."""
    pairs = find_research_files(root)
    if names:
        known = {p.name for p in pairs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"no research-code files for {', '.join(unknown)} in {root}; "
                f"found: {', '.join(sorted(known))}"
            )
        pairs = [p for p in pairs if p.name in names]
    traits: list[Trait] = []
    problems: list[Problem] = []
    errors: list[str] = []
    for pair in pairs:
        try:
            traits.append(convert_research_pair(pair, version=version))
        except TraitError as exc:
            problems += exc.problems
        except ConfigError as exc:
            errors.append(str(exc))
    if errors or problems:
        lines = errors + [f"  - {p}" for p in problems]
        raise ConfigError(f"import from {root} failed, nothing was written:\n" + "\n".join(lines))
    return traits


def to_research_files(trait: Trait) -> tuple[dict[str, Any], dict[str, Any]]:
    """(extract, eval) file contents in the research format, e.g. to run the research code on a
    trait written here."""
    instruction = [{"pos": p.pos, "neg": p.neg} for p in trait.instructions]
    return (
        {"instruction": instruction, "questions": list(trait.questions.extract), "eval_prompt": trait.rubric},
        {"instruction": instruction, "questions": list(trait.questions.eval), "eval_prompt": trait.rubric},
    )
