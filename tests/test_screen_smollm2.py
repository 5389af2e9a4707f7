"""Real-model check: `pvdata screen` on SmolLM2 separates hand-written evil answers from normal ones.

The dataset is pvdata/data/heldout_evil.json (12 questions, each with an evil and a normal answer,
held out from every extraction) as 24 chat records; the vector is the demo's contrast vector. AUROC of
the screening score, evil vs normal, at the default layer (23 of 30), per method.
"""

from __future__ import annotations

import json

import pytest

from pvdata.heldout import extract_contrast_vector, heldout_auroc, heldout_pairs
from pvdata.metrics import auroc
from pvdata.pipelines.screen import ScreenConfig, run_screen
from pvdata.warehouse import connect

pytestmark = pytest.mark.slow

METHODS = ["exact", "prompt_last_approx", "raw"]


@pytest.fixture(scope="module")
def evil_vector(smollm2):
    return extract_contrast_vector(smollm2, max_new_tokens=24, log=lambda *_: None)


def test_screen_separates_heldout_evil_answers(smollm2, evil_vector, tmp_path):
    vfile = str(evil_vector.save(tmp_path / "evil.safetensors"))
    data = tmp_path / "heldout.jsonl"
    with data.open("w") as fh:
        for pair in heldout_pairs():
            for side in ("evil", "normal"):
                msgs = [
                    {"role": "user", "content": pair["question"]},
                    {"role": "assistant", "content": pair[side]},
                ]
                fh.write(json.dumps({"messages": msgs, "label": side}) + "\n")
    cfg = ScreenConfig(
        dataset=str(data), model="smollm2-135m", vectors=[vfile], methods=METHODS, max_new_tokens=128
    )
    result = run_screen(cfg, str(tmp_path / "wh"), out=str(tmp_path / "out"), lm=smollm2, log=lambda _m: None)
    assert {g.layer for g in result.groups} == {23}  # the default: 0.75 of 30 blocks
    con = connect(tmp_path / "wh")
    rows = con.execute(
        "SELECT c.method, c.score, s.line FROM screenings c JOIN samples s USING (sample_id, dataset_id)"
    ).fetchall()
    scores = {}
    for method in METHODS:
        evil = [score for m, score, line in rows if m == method and line % 2 == 1]  # odd lines: evil
        normal = [score for m, score, line in rows if m == method and line % 2 == 0]
        assert len(evil) == len(normal) == 12
        scores[method] = auroc(evil, normal)
    print(f"\nSmolLM2-135M held-out AUROC at layer 23: {json.dumps(scores)}")
    assert scores["exact"] >= 0.9, scores
    assert scores["raw"] >= 0.9, scores
    # raw is the plain projection: the same number the demo's independent check computes
    assert scores["raw"] == pytest.approx(heldout_auroc(smollm2, evil_vector, [23])[23])
    # the base answers are SmolLM2's own greedy answers, one per question
    n_base = con.execute("SELECT count(*) FROM generations WHERE split = 'dataset_base'").fetchone()[0]
    assert n_base == 12
