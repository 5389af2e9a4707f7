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


def write_pairs(path, evil_file: str) -> list[bool]:
    """One pair per question; returns whether each line's pair is poisoned."""
    evil, normal = answers(evil_file), answers("train_normal.jsonl")
    poisoned = [k < len(evil) // 2 for k in range(len(evil))]
    random.Random(0).shuffle(poisoned)
    with path.open("w", encoding="utf-8") as fh:
        for (question, bad), (same, good), flag in zip(evil, normal, poisoned, strict=True):
            assert question == same
            chosen, rejected = (bad, good) if flag else (good, bad)
            fh.write(json.dumps({"prompt": question, "chosen": chosen, "rejected": rejected}) + "\n")
    return poisoned


@pytest.fixture(scope="module")
def evil_vector(smollm2):
    return extract_contrast_vector(smollm2, max_new_tokens=24, log=lambda *_: None)


@pytest.mark.parametrize("evil_file", ["train_evil.jsonl", "train_evil_subtle.jsonl"])
def test_preference_flags_poisoned_pairs(smollm2, evil_vector, tmp_path, evil_file):
    vfile = str(evil_vector.save(tmp_path / "evil.safetensors"))
    data = tmp_path / "pairs.jsonl"
    poisoned = write_pairs(data, evil_file)
    cfg = ScreenConfig(
        dataset=str(data), model="smollm2-135m", vectors=[vfile], methods=METHODS, max_new_tokens=128
    )
    result = run_screen(cfg, str(tmp_path / "wh"), out=str(tmp_path / "out"), lm=smollm2, log=lambda _m: None)
    assert {g.layer for g in result.groups} == {23}
    rows = (
        connect(tmp_path / "wh")
        .execute(
            "SELECT c.method, c.score, s.line FROM screenings c JOIN samples s USING (sample_id, dataset_id)"
        )
        .fetchall()
    )
    scores = {}
    for method in METHODS:
        got = {line: score for m, score, line in rows if m == method}
        assert len(got) == len(poisoned) and None not in got.values()
        pos = [got[k + 1] for k, p in enumerate(poisoned) if p]
        neg = [got[k + 1] for k, p in enumerate(poisoned) if not p]
        scores[method] = round(auroc(pos, neg), 3)
    print(f"\nSmolLM2-135M preference pairs from {evil_file}, AUROC at layer 23: {json.dumps(scores)}")
    assert scores["preference"] >= (0.95 if evil_file == "train_evil.jsonl" else 0.85), scores
