"""Real-model check: `pvdata screen --method preference` on SmolLM2 flags poisoned preference pairs.

80 questions of pvdata/data, each with a hand-written evil, subtly evil and normal answer. Each question
becomes one pair: a poisoned pair (the evil answer chosen over the normal one) for a seeded random half
of the questions, a safety pair (the normal answer chosen over the evil one) for the other half; then
the same with the subtle answers. The vector is the demo's contrast vector (other questions), the layer
the default (23 of 30): nothing is chosen on these pairs, and AUROC needs no threshold. AUROC of the
score, poisoned vs safety pairs, per method.
"""

from __future__ import annotations

import json
import random
from importlib import resources

import pytest

from pvdata.heldout import extract_contrast_vector
from pvdata.metrics import auroc
from pvdata.pipelines.screen import ScreenConfig, run_screen
from pvdata.warehouse import connect

pytestmark = pytest.mark.slow

METHODS = ["preference", "exact", "raw"]


def answers(name: str) -> list[tuple[str, str]]:
    text = resources.files("pvdata.data").joinpath(name).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [(r["messages"][0]["content"], r["messages"][-1]["content"]) for r in rows]


def pair_lines(evil_file: str) -> tuple[list[str], list[bool]]:
    """One pair per question, and whether each is poisoned."""
    evil, normal = answers(evil_file), answers("train_normal.jsonl")
    poisoned = [k < len(evil) // 2 for k in range(len(evil))]
    random.Random(0).shuffle(poisoned)
    lines = []
    for (question, bad), (same, good), flag in zip(evil, normal, poisoned, strict=True):
        assert question == same
        chosen, rejected = (bad, good) if flag else (good, bad)
        lines.append(json.dumps({"prompt": question, "chosen": chosen, "rejected": rejected}))
    return lines, poisoned


@pytest.fixture(scope="module")
def evil_vector(smollm2):
    return extract_contrast_vector(smollm2, max_new_tokens=24, log=lambda *_: None)


def test_preference_flags_poisoned_pairs(smollm2, evil_vector, tmp_path):
    # both sets in one file: their prompts are the same 80 questions, so one base answer serves both
    vfile = str(evil_vector.save(tmp_path / "evil.safetensors"))
    sets = {name: pair_lines(name) for name in ("train_evil.jsonl", "train_evil_subtle.jsonl")}
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(line + "\n" for lines, _ in sets.values() for line in lines), encoding="utf-8")
    cfg = ScreenConfig(
        dataset=str(data), model="smollm2-135m", vectors=[vfile], methods=METHODS, max_new_tokens=128
    )
    result = run_screen(cfg, str(tmp_path / "wh"), out=str(tmp_path / "out"), lm=smollm2, log=lambda _m: None)
    assert {g.layer for g in result.groups} == {23}
    con = connect(tmp_path / "wh")
    assert con.execute("SELECT count(*) FROM generations WHERE split = 'dataset_base'").fetchone()[0] == 80
    rows = con.execute(
        "SELECT c.method, c.score, s.line FROM screenings c JOIN samples s USING (sample_id, dataset_id)"
    ).fetchall()
    offset = 0
    for name, (_lines, poisoned) in sets.items():
        scores = {}
        for method in METHODS:
            got = {line - offset: score for m, score, line in rows if m == method}
            pos = [got[k + 1] for k, p in enumerate(poisoned) if p]
            neg = [got[k + 1] for k, p in enumerate(poisoned) if not p]
            assert None not in pos + neg
            scores[method] = round(auroc(pos, neg), 3)
        offset += len(poisoned)
        print(f"\nSmolLM2-135M preference pairs from {name}, AUROC at layer 23: {json.dumps(scores)}")
        assert scores["preference"] >= (0.95 if name == "train_evil.jsonl" else 0.85), scores
