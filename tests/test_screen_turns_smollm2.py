"""Real-model check: on SmolLM2, an evil answer hidden in the first turn of a two-turn chat is caught by
`--turns all` and largely missed by a last-turn screen.

80 two-turn chats from the 80 questions of pvdata/data: turn 1 answers question k (its evil answer for a
seeded random half of the chats, its normal answer for the other half), turn 2 answers question k + 40
with its normal answer. The vector is the demo's contrast vector (other questions), the layer the
default (23 of 30): nothing is chosen on these chats. AUROC of the score, hidden-evil vs clean chats,
per method, for --turns last and --turns all.
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

METHODS = ["raw", "prompt_last_approx"]


def answers(name: str) -> list[tuple[str, str]]:
    text = resources.files("pvdata.data").joinpath(name).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [(r["messages"][0]["content"], r["messages"][-1]["content"]) for r in rows]


@pytest.fixture(scope="module")
def evil_vector(smollm2):
    return extract_contrast_vector(smollm2, max_new_tokens=24, log=lambda *_: None)


def test_turns_all_catches_an_evil_first_turn(smollm2, evil_vector, tmp_path):
    vfile = str(evil_vector.save(tmp_path / "evil.safetensors"))
    evil, normal = answers("train_evil.jsonl"), answers("train_normal.jsonl")
    n = len(evil)
    hidden = [k < n // 2 for k in range(n)]
    random.Random(0).shuffle(hidden)
    data = tmp_path / "chats.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for k in range(n):
            question, first = (evil if hidden[k] else normal)[k]
            later, second = normal[(k + n // 2) % n]
            msgs = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": first},
                {"role": "user", "content": later},
                {"role": "assistant", "content": second},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    wh = str(tmp_path / "wh")
    scores = {}
    for turns in ("last", "all"):
        cfg = ScreenConfig(
            dataset=str(data),
            model="smollm2-135m",
            vectors=[vfile],
            methods=METHODS,
            turns=turns,
            top_k=n // 2,
        )
        result = run_screen(cfg, wh, out=str(tmp_path / turns), lm=smollm2, log=lambda _m: None)
        rows = (
            connect(wh)
            .execute(
                "SELECT c.method, c.score, s.line FROM screenings c "
                "JOIN samples s USING (sample_id, dataset_id) WHERE c.run_id = ?",
                [result.run_id],
            )
            .fetchall()
        )
        for method in METHODS:
            got = {line: score for m, score, line in rows if m == method}
            assert len(got) == n and None not in got.values()
            pos = [got[k + 1] for k in range(n) if hidden[k]]
            neg = [got[k + 1] for k in range(n) if not hidden[k]]
            scores[f"{method}, --turns {turns}"] = round(auroc(pos, neg), 3)
    print(f"\nSmolLM2-135M evil first turn of 2, AUROC at layer 23: {json.dumps(scores)}")
    assert scores["raw, --turns all"] >= 0.9, scores
    assert scores["raw, --turns all"] > scores["raw, --turns last"], scores
    assert scores["prompt_last_approx, --turns all"] >= 0.85, scores
