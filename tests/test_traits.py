"""Trait definitions: the shipped traits, every check (each naming file, field and fix), system prompts,
content hashes, and the research-code importer."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pvdata.errors import ConfigError
from pvdata.traits import (
    ANTONYMS,
    BUNDLED_DIR,
    N_INSTRUCTIONS,
    N_QUESTIONS_PER_SPLIT,
    Trait,
    TraitError,
    article,
    check_trait_data,
    dump_trait,
    import_research_dir,
    list_traits,
    load_trait,
    neg_name_for,
    save_trait,
    system_prompt,
    to_research_files,
    validate_trait,
)

PAPER_TRAITS = ("evil", "sycophantic", "hallucinating", "optimistic", "impolite", "apathetic", "humorous")
REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "reference" / "upstream_traits"


def valid_data(name: str = "cheerful") -> dict[str, Any]:
    """A valid raw trait written for these tests (not one of the shipped ones, so edits to those do not
    break the check tests)."""
    return {
        "name": name,
        "version": 1,
        "description": "A cheerful assistant sounds happy and upbeat whatever it is asked.",
        "pos_name": name,
        "neg_name": "helpful",
        "instructions": [
            {"pos": f"Sound delighted, style {i}.", "neg": f"Sound flat, style {i}."} for i in range(5)
        ],
        "questions": {
            "extract": [f"How do I fix bicycle part number {i}?" for i in range(20)],
            "eval": [f"What is a good recipe for dish number {i}?" for i in range(20)],
        },
        "rubric": "Rate how cheerful this is.\nQ: {question}\nA: {answer}\n"
        "Reply REFUSAL if it refused, else a number from 0 to 100 and nothing else.",
    }


def fields(problems: list[Any]) -> list[str]:
    return [p.field for p in problems]


# -- the shipped traits ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_TRAITS)
def test_shipped_trait_is_valid_and_complete(name: str) -> None:
    path = BUNDLED_DIR / f"{name}.yaml"
    assert path.is_file(), f"traits/{name}.yaml is missing"
    assert validate_trait(path) == []
    trait = load_trait(path)
    assert trait.name == name and trait.pos_name == name and trait.version >= 1
    assert len(trait.instructions) == N_INSTRUCTIONS
    assert len(trait.questions.extract) == len(trait.questions.eval) == N_QUESTIONS_PER_SPLIT
    assert trait.neg_name == neg_name_for(name)
    assert "\n\n" not in trait.description
    assert re.fullmatch(rf"{name}@v{trait.version}\+[0-9a-f]{{8}}", trait.trait_version)
    # The rubric renders with str.format (the research code) and with the judge's renderer alike.
    rendered = trait.rubric.format(question="Q-TEXT", answer="A-TEXT")
    assert "Q-TEXT" in rendered and "A-TEXT" in rendered and "REFUSAL" in rendered


def test_shipped_traits_are_listed_by_name() -> None:
    assert set(PAPER_TRAITS) <= set(list_traits([BUNDLED_DIR]))
    assert set(PAPER_TRAITS) <= set(list_traits())


def test_shipped_questions_are_unique_across_all_traits() -> None:
    seen: dict[str, str] = {}
    for name in PAPER_TRAITS:
        t = load_trait(BUNDLED_DIR / f"{name}.yaml")
        for q in t.questions.extract + t.questions.eval:
            key = " ".join(q.split()).casefold()
            assert key not in seen, f"{name}: {q!r} also in {seen[key]}"
            seen[key] = name


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/reference/upstream_traits is not present")
def test_shipped_traits_do_not_reuse_upstream_text() -> None:
    def norm(s: str) -> str:
        return " ".join(re.findall(r"[a-z0-9']+", s.lower()))

    upstream: set[str] = set()
    for f in UPSTREAM.glob("*/*.json"):
        d = json.loads(f.read_text(encoding="utf-8"))
        upstream |= {norm(q) for q in d["questions"]}
        upstream |= {norm(p[k]) for p in d["instruction"] for k in ("pos", "neg")}
        upstream |= {norm(s) for s in re.split(r"(?<=[.!?])\s+|\n", d["eval_prompt"]) if len(s.split()) > 4}
    for name in PAPER_TRAITS:
        t = load_trait(BUNDLED_DIR / f"{name}.yaml")
        ours = t.questions.extract + t.questions.eval + [p.pos for p in t.instructions]
        ours += [p.neg for p in t.instructions]
        ours += [
            s for s in re.split(r"(?<=[.!?])\s+|\n", t.rubric + " " + t.description) if len(s.split()) > 4
        ]
        copied = [s for s in ours if norm(s) in upstream]
        assert not copied, f"{name} reuses upstream text: {copied}"


# -- system prompts ----------------------------------------------------------------------------------


def test_system_prompt_follows_the_article_rule() -> None:
    evil = load_trait(BUNDLED_DIR / "evil.yaml")
    assert system_prompt(evil, "pos", 0) == f"You are an evil assistant. {evil.instructions[0].pos}"
    assert system_prompt(evil, "neg", 4) == f"You are a good assistant. {evil.instructions[4].neg}"
    syc = load_trait(BUNDLED_DIR / "sycophantic.yaml")
    assert system_prompt(syc, "pos", 2).startswith("You are a sycophantic assistant. ")
    opt = load_trait(BUNDLED_DIR / "optimistic.yaml")
    assert system_prompt(opt, "pos", 1).startswith("You are an optimistic assistant. ")
    hal = load_trait(BUNDLED_DIR / "hallucinating.yaml")
    assert system_prompt(hal, "neg", 3).startswith("You are a helpful assistant. ")
    apa = load_trait(BUNDLED_DIR / "apathetic.yaml")
    assert system_prompt(apa, "neg", 0).startswith("You are an empathetic assistant. ")


def test_article_is_by_vowel_letter_case_insensitive() -> None:
    assert [article(w) for w in ("evil", "Evil", "impolite", "Optimistic", "useful", "apathetic")] == [
        "an"
    ] * 6
    assert [article(w) for w in ("sycophantic", "humorous", "honest", "Yellow", "")] == ["a"] * 5


@given(st.text(min_size=1))
def test_article_depends_only_on_the_first_letter(word: str) -> None:
    assert article(word) == ("an" if word[0].lower() in "aeiou" else "a")


def test_system_prompt_rejects_bad_polarity_and_index() -> None:
    t = load_trait(BUNDLED_DIR / "humorous.yaml")
    with pytest.raises(ConfigError, match="polarity"):
        system_prompt(t, "positive", 0)
    with pytest.raises(ConfigError, match=r"valid: 0\.\.4"):
        system_prompt(t, "pos", 5)
    with pytest.raises(ConfigError):
        system_prompt(t, "neg", -1)


# -- checks: each problem names the file, the field and the fix ---------------------------------------


def write_trait(tmp_path: Path, data: Any, name: str = "cheerful") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_valid_data_has_no_problems(tmp_path: Path) -> None:
    assert check_trait_data(valid_data()) == []
    assert validate_trait(write_trait(tmp_path, valid_data())) == []


@pytest.mark.parametrize(
    ("split", "n", "expected"),
    [
        ("extract", 19, "has 19 question(s), needs exactly 20"),
        ("eval", 21, "has 21 question(s), needs exactly 20"),
    ],
)
def test_wrong_question_count(tmp_path: Path, split: str, n: int, expected: str) -> None:
    data = valid_data()
    data["questions"][split] = [f"Distinct question {split} {i}?" for i in range(n)]
    path = write_trait(tmp_path, data)
    problems = validate_trait(path)
    assert fields(problems) == [f"questions.{split}"]
    text = str(problems[0])
    assert (
        text.startswith(f"{path.name}: questions.{split}: ") or f"cheerful.yaml: questions.{split}:" in text
    )
    assert expected in text and "fix:" in text


def test_wrong_instruction_count_and_empty_instruction() -> None:
    data = valid_data()
    data["instructions"] = data["instructions"][:4]
    data["instructions"][1]["neg"] = "   "
    problems = check_trait_data(data, source="x.yaml")
    assert fields(problems) == ["instructions", "instructions[1].neg"]
    assert "needs exactly 5" in problems[0].message


def test_duplicates_ignore_case_and_whitespace() -> None:
    data = valid_data()
    data["questions"]["extract"][7] = "  how do I FIX bicycle   part number 2? "
    data["instructions"][3]["pos"] = "sound  DELIGHTED, style 0."
    problems = check_trait_data(data, source="traits/cheerful.yaml")
    assert fields(problems) == ["instructions[3].pos", "questions.extract[7]"]
    assert "duplicate of questions.extract[2]" in str(problems[1])
    assert str(problems[1]).startswith("traits/cheerful.yaml: questions.extract[7]: duplicate")


def test_splits_must_be_disjoint() -> None:
    data = valid_data()
    data["questions"]["eval"][3] = data["questions"]["extract"][11].upper()
    problems = check_trait_data(data, source="t.yaml")
    assert fields(problems) == ["questions.eval[3]"]
    assert "also in questions.extract[11]" in problems[0].message and "disjoint" in problems[0].fix


@pytest.mark.parametrize(
    ("rubric", "needle"),
    [
        ("Q {question}. REFUSAL or 0 to 100.", "{answer} is missing"),
        ("A {answer}. REFUSAL or 0 to 100.", "{question} is missing"),
        ("{question} {answer} {score} REFUSAL or 0 to 100.", "unknown placeholder {score}"),
        ('{question} {answer} reply {"score": 5} REFUSAL 0 100', "unknown placeholder"),
        ("{question} {answer} } REFUSAL or 0 to 100.", "unbalanced braces"),
        ("{question!r} {answer} REFUSAL or 0 to 100.", "conversion or format spec"),
        ("{question} {answer} give a number from 0 to 100.", "REFUSAL"),
        ("{question} {answer} REFUSAL or a grade A-F.", "0 to 100"),
    ],
)
def test_rubric_checks(rubric: str, needle: str) -> None:
    data = valid_data()
    data["rubric"] = rubric
    problems = check_trait_data(data, source="t.yaml")
    assert problems and all(p.field == "rubric" for p in problems)
    assert any(needle in str(p) for p in problems), [str(p) for p in problems]


def test_doubled_braces_in_rubric_are_fine() -> None:
    data = valid_data()
    data["rubric"] += ' Never answer {{"score": 5}}.'
    assert check_trait_data(data) == []


def test_unknown_fields_and_types(tmp_path: Path) -> None:
    data = valid_data()
    data["notes"] = "x"
    data["instructions"][0]["tone"] = "x"
    data["questions"]["train"] = []
    data["version"] = "1"
    path = write_trait(tmp_path, data)
    problems = validate_trait(path)
    by_field = {p.field: p for p in problems}
    assert set(by_field) == {"notes", "instructions[0].tone", "questions.train", "version"}
    assert "unknown field" in by_field["notes"].message and "valid: name, version" in by_field["notes"].fix
    assert "valid: pos, neg" in by_field["instructions[0].tone"].fix
    assert "valid: extract, eval" in by_field["questions.train"].fix
    assert "whole number" in by_field["version"].fix


def test_missing_fields_and_yaml_booleans() -> None:
    data = valid_data()
    del data["rubric"]
    data["questions"]["extract"][0] = True  # what an unquoted `yes` becomes in YAML
    problems = check_trait_data(data, source="t.yaml")
    assert {"rubric", "questions.extract[0]"} <= set(fields(problems))


def test_name_must_match_file_and_be_a_slug(tmp_path: Path) -> None:
    path = write_trait(tmp_path, valid_data("cheerful"), name="happy")
    problems = validate_trait(path)
    assert fields(problems) == ["name"] and "rename the file" in problems[0].fix
    assert check_trait_data(valid_data("Cheerful Bot"))[0].field == "name"


def test_many_problems_are_reported_together(tmp_path: Path) -> None:
    data = valid_data()
    data["questions"]["extract"] = data["questions"]["extract"][:10]
    data["questions"]["eval"][0] = data["questions"]["eval"][1]
    data["rubric"] = "no placeholders, REFUSAL, 0 to 100"
    data["surprise"] = 1
    path = write_trait(tmp_path, data)
    with pytest.raises(TraitError) as info:
        load_trait(path)
    msg = str(info.value)
    for needle in ("questions.extract", "questions.eval[1]", "{question}", "{answer}", "surprise"):
        assert needle in msg
    assert msg.count("fix:") == len(info.value.problems) == 5
    assert "cheerful.yaml" in msg


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nversion: 1\ndescription: [unclosed\n", encoding="utf-8")
    problems = validate_trait(path)
    assert len(problems) == 1 and "not valid YAML at line" in problems[0].message


def test_unknown_trait_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known traits: .*evil"):
        load_trait("no_such_trait")
    assert "no trait named" in str(validate_trait("no_such_trait")[0])


@given(st.sampled_from(range(20)), st.sampled_from(range(20)), st.booleans(), st.text(" \t", max_size=3))
def test_duplicate_detection_property(i: int, j: int, upper: bool, pad: str) -> None:
    data = valid_data()
    src = data["questions"]["extract"][j]
    data["questions"]["eval"][i] = pad + (src.upper() if upper else src.replace(" ", "  ")) + pad
    problems = check_trait_data(data)
    assert fields(problems) == [f"questions.eval[{i}]"]


# -- lineage and round trips -------------------------------------------------------------------------


def test_content_hash_ignores_formatting_and_tracks_content(tmp_path: Path) -> None:
    t = Trait.model_validate(valid_data())
    path = save_trait(t, tmp_path)
    assert load_trait(path) == t and load_trait(path).trait_version == t.trait_version
    # Reformatted as JSON-in-YAML: same content, same id.
    path.write_text(json.dumps(t.model_dump(), indent=1), encoding="utf-8")
    assert load_trait(path).trait_version == t.trait_version
    changed = copy.deepcopy(valid_data())
    changed["questions"]["eval"][0] = "A brand new question?"
    t2 = Trait.model_validate(changed)
    assert t2.version == t.version and t2.trait_version != t.trait_version


def test_save_refuses_to_overwrite_and_refuses_invalid(tmp_path: Path) -> None:
    t = Trait.model_validate(valid_data())
    save_trait(t, tmp_path)
    with pytest.raises(ConfigError, match="--force"):
        save_trait(t, tmp_path)
    save_trait(t, tmp_path, force=True)
    bad = valid_data()
    bad["questions"]["eval"] = bad["questions"]["eval"][:3]
    with pytest.raises(TraitError):
        save_trait(Trait.model_validate(bad), tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_dump_is_the_file_format() -> None:
    t = load_trait(BUNDLED_DIR / "impolite.yaml")
    assert Trait.model_validate(yaml.safe_load(dump_trait(t))) == t
    assert Trait.model_validate(json.loads(dump_trait(t, "json"))) == t
    assert list(yaml.safe_load(dump_trait(t))) == list(Trait.model_fields)


def test_traits_path_env_shadows_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = valid_data("evil")
    data["pos_name"], data["neg_name"] = "evil", "good"
    save_trait(Trait.model_validate(data), tmp_path)
    monkeypatch.setenv("PVDATA_TRAITS_PATH", str(tmp_path))
    assert load_trait("evil").description.startswith("A cheerful")
    monkeypatch.delenv("PVDATA_TRAITS_PATH")
    assert load_trait("evil").description.startswith("An evil")


# -- the research-code importer -----------------------------------------------------------------------


def research_file(data: dict[str, Any], split: str) -> dict[str, Any]:
    return {
        "instruction": data["instructions"],
        "questions": data["questions"][split],
        "eval_prompt": data["rubric"],
    }


def write_research_dir(
    root: Path, names: tuple[str, ...] = ("cheerful", "rude"), *, flat: bool = False
) -> None:
    ex_dir = root if flat else root / "extract"
    for d in (ex_dir, root / "eval"):
        d.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = valid_data(name)
        (ex_dir / f"{name}.json").write_text(json.dumps(research_file(data, "extract")), encoding="utf-8")
        (root / "eval" / f"{name}.json").write_text(json.dumps(research_file(data, "eval")), encoding="utf-8")


@pytest.mark.parametrize("flat", [False, True])
def test_import_synthetic_research_dir(tmp_path: Path, flat: bool) -> None:
    write_research_dir(tmp_path / "src", flat=flat)
    traits = import_research_dir(tmp_path / "src")
    assert [t.name for t in traits] == ["cheerful", "rude"]
    cheerful, rude = traits
    assert cheerful.pos_name == "cheerful" and cheerful.neg_name == "helpful"
    assert rude.neg_name == "polite" == ANTONYMS["rude"]
    assert cheerful.questions.extract == valid_data()["questions"]["extract"]
    assert cheerful.questions.eval == valid_data()["questions"]["eval"]
    assert cheerful.rubric == valid_data()["rubric"].strip()
    assert str(tmp_path) not in cheerful.description and "cheerful.json (extraction)" in cheerful.description
    ex, ev = to_research_files(cheerful)
    assert ex == research_file(valid_data(), "extract") | {"eval_prompt": cheerful.rubric}
    assert ev["questions"] == valid_data()["questions"]["eval"]


def test_import_rejects_mismatched_instructions(tmp_path: Path) -> None:
    write_research_dir(tmp_path)
    ev_path = tmp_path / "eval" / "rude.json"
    ev = json.loads(ev_path.read_text())
    ev["instruction"][2]["neg"] = "Something else entirely."
    ev_path.write_text(json.dumps(ev))
    with pytest.raises(
        ConfigError, match=r"different instructions \(first difference at instruction\[2\]\)"
    ) as info:
        import_research_dir(tmp_path)
    assert "extract/rude.json" in str(info.value) and "eval/rude.json" in str(info.value)


def test_import_rejects_mismatched_rubric_and_missing_files(tmp_path: Path) -> None:
    write_research_dir(tmp_path)
    ev_path = tmp_path / "eval" / "cheerful.json"
    ev = json.loads(ev_path.read_text())
    ev["eval_prompt"] += " extra"
    ev_path.write_text(json.dumps(ev))
    with pytest.raises(ConfigError, match="different eval_prompt"):
        import_research_dir(tmp_path)
    (tmp_path / "eval" / "rude.json").unlink()
    with pytest.raises(ConfigError, match=r"no eval/rude\.json"):
        import_research_dir(tmp_path)


def test_import_reports_problems_in_research_terms(tmp_path: Path) -> None:
    write_research_dir(tmp_path, ("cheerful",))
    ex_path = tmp_path / "extract" / "cheerful.json"
    ex = json.loads(ex_path.read_text())
    ex["questions"] = ex["questions"][:18]
    ex["extra"] = 1
    ex_path.write_text(json.dumps(ex))
    with pytest.raises(ConfigError) as info:
        import_research_dir(tmp_path)
    msg = str(info.value)
    assert "extract/cheerful.json: extra: unknown field" in msg
    ex.pop("extra")
    ex_path.write_text(json.dumps(ex))
    with pytest.raises(ConfigError) as info:
        import_research_dir(tmp_path)
    assert "extract/cheerful.json: questions: has 18 question(s), needs exactly 20" in str(info.value)


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/reference/upstream_traits is not present")
def test_import_upstream_research_files(tmp_path: Path) -> None:
    traits = import_research_dir(UPSTREAM)
    assert sorted(t.name for t in traits) == sorted(PAPER_TRAITS)
    for t in traits:
        assert len(t.instructions) == 5 and len(t.questions.extract) == len(t.questions.eval) == 20
        assert "{question}" in t.rubric and "{answer}" in t.rubric
        assert t.neg_name == neg_name_for(t.name)
        ex, ev = to_research_files(t)
        assert ex == json.loads((UPSTREAM / "extract" / f"{t.name}.json").read_text(encoding="utf-8"))
        assert ev == json.loads((UPSTREAM / "eval" / f"{t.name}.json").read_text(encoding="utf-8"))
        path = save_trait(t, tmp_path)
        assert load_trait(path) == t
