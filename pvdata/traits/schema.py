"""The trait definition: its pydantic model and every check a trait must pass (ALGORITHMS.md §2).

Checks run on the raw mapping (what a YAML file, a research-code file or an LLM reply holds) rather
than on a validated model, so one pass reports every problem at once: a wrong count in one split, a
duplicate in the other and an unknown field are listed together, each with its file, field and fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pvdata.errors import ConfigError

HASH_CHARS = 8  # hex digits of a trait's content hash

N_INSTRUCTIONS = 5
N_QUESTIONS_PER_SPLIT = 20
SPLITS: tuple[str, str] = ("extract", "eval")
POLARITIES: tuple[str, str] = ("pos", "neg")
PLACEHOLDERS: tuple[str, str] = ("question", "answer")
DEFAULT_NEG_NAME = "helpful"

Polarity = Literal["pos", "neg"]
Split = Literal["extract", "eval"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# A trait adjective, possibly a few words or hyphenated ("power-seeking"); it sits in a sentence.
ADJECTIVE_RE = re.compile(r"^[A-Za-z][A-Za-z'-]*(?: [A-Za-z][A-Za-z'-]*){0,3}$")


class _Strict(BaseModel):
    # strict: a YAML `yes` or `1` where text belongs is an error, not a silent conversion.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, str_strip_whitespace=True)


class InstructionPair(_Strict):
    """One system-prompt instruction that elicits the trait (pos) and its counterpart (neg)."""

    pos: str
    neg: str


class TraitQuestions(_Strict):
    """Questions that invite the trait without asking for it; the splits never share a question."""

    extract: list[str]
    eval: list[str]


class Trait(_Strict):
    """One trait definition as stored in traits/<name>.yaml. Build it through `parse_trait` or
    `load_trait`, which run every check; the model alone only checks field names and types."""

    name: str
    version: int = Field(ge=1)
    description: str
    pos_name: str
    neg_name: str
    instructions: list[InstructionPair]
    questions: TraitQuestions
    rubric: str

    def split_questions(self, split: Split) -> list[str]:
        """The questions of one split ("extract" or "eval")."""
        if split not in SPLITS:
            raise ConfigError(f"split {split!r} is not a trait split; splits: {', '.join(SPLITS)}")
        return list(self.questions.extract if split == "extract" else self.questions.eval)

    @property
    def content_hash(self) -> str:
        """8 hex digits of the sha256 of the canonical JSON: formatting and comments in the file do not
        change it, any change of content does."""
        canonical = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:HASH_CHARS]

    @property
    def trait_version(self) -> str:
        """Lineage id such as "evil@v1+1a2b3c4d": the declared version plus the content hash, so an
        edit that forgot to bump the version still yields a different id."""
        return f"{self.name}@v{self.version}+{self.content_hash}"


FIELDS: tuple[str, ...] = tuple(Trait.model_fields)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a trait: where (file and field), what, and how to fix it."""

    source: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        return f"{where}: {self.message}; fix: {self.fix}"


class TraitError(ConfigError):
    """A trait that fails its checks; `problems` holds each one, the message lists them all."""

    def __init__(self, problems: Sequence[Problem], *, summary: str | None = None) -> None:
        self.problems = list(problems)
        head = summary or f"{len(self.problems)} problem(s) in a trait definition"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


def normalize(text: str) -> str:
    """The key under which two questions count as the same: case and whitespace ignored."""
    return " ".join(text.split()).casefold()


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _structure_problems(data: Mapping[str, Any], source: str) -> list[Problem]:
    """Field names and types, from pydantic, rewritten as problems with a fix."""
    try:
        Trait.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = _loc(err["loc"])
            kind = err["type"]
            if kind == "extra_forbidden":
                parent = err["loc"][:-1]
                valid = _valid_keys(parent)
                problems.append(
                    Problem(source, field, "unknown field", f"remove it or correct its name; valid: {valid}")
                )
            elif kind == "missing":
                problems.append(Problem(source, field, "required field is missing", "add it"))
            elif field == "version":
                problems.append(
                    Problem(
                        source,
                        field,
                        f"{err['msg'].lower()} (got {err.get('input')!r})",
                        "write a whole number >= 1, e.g. version: 1",
                    )
                )
            else:
                problems.append(
                    Problem(
                        source,
                        field,
                        f"{err['msg'].lower()} (got {type(err.get('input')).__name__})",
                        "give the value the type the trait format expects (text, list or mapping); "
                        "quote text that YAML would read as a number, date or yes/no",
                    )
                )
        return problems
    return []


def _valid_keys(parent: Sequence[int | str]) -> str:
    if not parent:
        return ", ".join(FIELDS)
    if parent[0] == "questions":
        return ", ".join(SPLITS)
    if parent[0] == "instructions":
        return ", ".join(POLARITIES)
    return "see docs/TRAITS.md"


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) else None


def _check_texts(
    items: Sequence[Any], field: str, source: str, what: str, problems: list[Problem]
) -> dict[str, int]:
    """Empty items and duplicates within one list; returns normalised text -> first index."""
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        text = _text(item)
        if text is None:
            continue  # a type problem, reported by the structure check
        if not text:
            problems.append(
                Problem(source, f"{field}[{i}]", f"empty {what}", f"write the {what} or remove it")
            )
            continue
        key = normalize(text)
        if key in seen:
            problems.append(
                Problem(
                    source,
                    f"{field}[{i}]",
                    f"duplicate of {field}[{seen[key]}] ({_short(text)!r})",
                    f"replace one of them with a different {what} "
                    "(case and spacing are ignored when comparing)",
                )
            )
        else:
            seen[key] = i
    return seen


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rubric_problems(rubric: str, source: str, field: str = "rubric") -> list[Problem]:
    """The rubric must fill in with str.format(question=..., answer=...) (as the research code does)
    and render identically with pvdata.judge.rubrics.render, and must ask for REFUSAL or 0..100."""
    problems: list[Problem] = []
    found: set[str] = set()
    try:
        for _literal, name, spec, conversion in string.Formatter().parse(rubric):
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                problems.append(
                    Problem(
                        source,
                        field,
                        f"unknown placeholder {{{name}}}",
                        "only {question} and {answer} are filled in; write other literal braces doubled, "
                        "as {{ and }}",
                    )
                )
            elif spec or conversion:
                problems.append(
                    Problem(
                        source,
                        field,
                        f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                        f"{':' + spec if spec else ''}}} has a conversion or format spec",
                        f"write it plainly as {{{name}}}",
                    )
                )
            else:
                found.add(name)
    except ValueError as exc:
        problems.append(
            Problem(
                source,
                field,
                f"unbalanced braces ({exc})",
                "write literal braces doubled, as {{ and }}, so that only {question} and {answer} "
                "are placeholders",
            )
        )
        found.update(p for p in PLACEHOLDERS if "{" + p + "}" in rubric)
    for name in PLACEHOLDERS:
        if name not in found:
            problems.append(
                Problem(
                    source,
                    field,
                    f"the placeholder {{{name}}} is missing",
                    f"insert {{{name}}} where the judged {name} should appear",
                )
            )
    if "REFUSAL" not in rubric:
        problems.append(
            Problem(
                source,
                field,
                "does not offer the answer REFUSAL",
                "tell the judge to reply REFUSAL (in capitals) when the assistant refused to answer",
            )
        )
    if not (re.search(r"(?<![\d.])0(?![\d.])", rubric) and re.search(r"(?<![\d.])100(?![\d.])", rubric)):
        problems.append(
            Problem(
                source,
                field,
                "does not ask for a score from 0 to 100",
                "tell the judge to reply with a single number from 0 to 100 and nothing else",
            )
        )
    return problems


def check_trait_data(
    data: Any, *, source: str = "<trait>", expected_name: str | None = None
) -> list[Problem]:
    """Every problem of a raw trait mapping: structure, counts, duplicates, overlap, placeholders.

    expected_name is the file's stem: a file must hold the trait it is named after, so a lookup by
    name always finds the right one.
    """
    if not isinstance(data, Mapping):
        return [
            Problem(
                source,
                "",
                f"a trait is a mapping of fields, got {type(data).__name__}",
                f"write the fields {', '.join(FIELDS)} at the top level",
            )
        ]
    problems = _structure_problems(data, source)

    name = data.get("name")
    if isinstance(name, str):
        if not NAME_RE.match(name.strip()):
            problems.append(
                Problem(
                    source,
                    "name",
                    f"{name!r} is not a trait name",
                    "use lower-case letters, digits, '_' or '-', starting with a letter (e.g. evil)",
                )
            )
        elif expected_name is not None and name.strip() != expected_name:
            problems.append(
                Problem(
                    source,
                    "name",
                    f"the file is named {expected_name!r} but holds the trait {name.strip()!r}",
                    f"rename the file to {name.strip()}.yaml or set name: {expected_name}",
                )
            )

    description = _text(data.get("description"))
    if description is not None:
        if not description:
            problems.append(
                Problem(source, "description", "empty", "write one paragraph saying what the trait is")
            )
        elif re.search(r"\n\s*\n", description):
            problems.append(
                Problem(
                    source,
                    "description",
                    "has more than one paragraph",
                    "keep it to one paragraph (no blank lines); put detail in the rubric",
                )
            )

    for key in ("pos_name", "neg_name"):
        value = _text(data.get(key))
        if value is not None and not ADJECTIVE_RE.match(value):
            problems.append(
                Problem(
                    source,
                    key,
                    f"{value!r} cannot stand in 'You are a/an ___ assistant.'",
                    "use an adjective of one to four plain words (letters, '-' or an apostrophe)",
                )
            )
    pos_name, neg_name = _text(data.get("pos_name")), _text(data.get("neg_name"))
    if pos_name and neg_name and pos_name.casefold() == neg_name.casefold():
        problems.append(
            Problem(
                source,
                "neg_name",
                "is the same as pos_name",
                f"use the antonym of {pos_name!r} when it is clear, else {DEFAULT_NEG_NAME!r}",
            )
        )

    instructions = data.get("instructions")
    if isinstance(instructions, list):
        if len(instructions) != N_INSTRUCTIONS:
            problems.append(
                Problem(
                    source,
                    "instructions",
                    f"has {len(instructions)} pair(s), needs exactly {N_INSTRUCTIONS}",
                    f"write {N_INSTRUCTIONS} {{pos, neg}} pairs",
                )
            )
        for polarity in POLARITIES:
            texts = [p.get(polarity) if isinstance(p, Mapping) else None for p in instructions]
            _check_texts_indexed(texts, "instructions", polarity, source, problems)
        for i, pair in enumerate(instructions):
            if not isinstance(pair, Mapping):
                continue
            pos, neg = _text(pair.get("pos")), _text(pair.get("neg"))
            if pos and neg and normalize(pos) == normalize(neg):
                problems.append(
                    Problem(
                        source,
                        f"instructions[{i}].neg",
                        "is the same as its pos",
                        "make neg suppress the trait or ask for its opposite",
                    )
                )

    questions = data.get("questions")
    if isinstance(questions, Mapping):
        seen: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            items = questions.get(split)
            if not isinstance(items, list):
                continue
            field = f"questions.{split}"
            if len(items) != N_QUESTIONS_PER_SPLIT:
                problems.append(
                    Problem(
                        source,
                        field,
                        f"has {len(items)} question(s), needs exactly {N_QUESTIONS_PER_SPLIT}",
                        f"{'add' if len(items) < N_QUESTIONS_PER_SPLIT else 'remove'} "
                        f"{abs(N_QUESTIONS_PER_SPLIT - len(items))}",
                    )
                )
            seen[split] = _check_texts(items, field, source, "question", problems)
        if len(seen) == 2:
            for key, j in seen["eval"].items():
                if key in seen["extract"]:
                    problems.append(
                        Problem(
                            source,
                            f"questions.eval[{j}]",
                            f"also in questions.extract[{seen['extract'][key]}] "
                            f"({_short(questions['eval'][j])!r})",
                            "the splits must be disjoint: replace it in one of them",
                        )
                    )

    rubric = _text(data.get("rubric"))
    if rubric is not None:
        problems.extend(rubric_problems(rubric, source))
    return problems


def _check_texts_indexed(
    texts: list[Any], field: str, polarity: str, source: str, problems: list[Problem]
) -> None:
    """Empty and duplicate instructions of one polarity, reported as instructions[i].pos."""
    seen: dict[str, int] = {}
    for i, item in enumerate(texts):
        text = _text(item)
        if text is None:
            continue
        where = f"{field}[{i}].{polarity}"
        if not text:
            problems.append(Problem(source, where, "empty instruction", "write the instruction"))
            continue
        key = normalize(text)
        if key in seen:
            problems.append(
                Problem(
                    source,
                    where,
                    f"duplicate of {field}[{seen[key]}].{polarity}",
                    "give each pair a different instruction",
                )
            )
        else:
            seen[key] = i


def parse_trait(data: Any, *, source: str = "<trait>", expected_name: str | None = None) -> Trait:
    """A checked Trait from a raw mapping, or a TraitError listing every problem."""
    problems = check_trait_data(data, source=source, expected_name=expected_name)
    if problems:
        raise TraitError(problems, summary=f"{source}: {len(problems)} problem(s)")
    return Trait.model_validate(dict(data))
