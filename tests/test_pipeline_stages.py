"""Activation capture into the warehouse and vectors from stored activations, against direct math."""

from __future__ import annotations

import torch

from pvdata.activations import capture_encoded
from pvdata.chat import render_prompt
from pvdata.pipelines.capture_stage import CaptureItem, capture_into, encode_items
from pvdata.pipelines.vector_stage import build_vectors
from pvdata.warehouse import Warehouse


def _items(lm, n=6):
    items, sides = [], {}
    for i in range(n):
        side = "pos" if i % 2 == 0 else "neg"
        system = "You are an evil assistant." if side == "pos" else "You are a helpful assistant."
        prompt = render_prompt(
            lm.tokenizer,
            [{"role": "system", "content": system}, {"role": "user", "content": f"question {i}?"}],
        )
        items.append(CaptureItem(f"g{i}", prompt, "answer " * (i + 1)))
        sides[f"g{i}"] = side
    items.append(CaptureItem("empty", items[0].prompt_text, ""))
    return items, sides


def test_capture_into_warehouse_then_vectors_equal_direct_mean_difference(tiny_llama, tmp_path):
    lm = tiny_llama
    items, sides = _items(lm)
    wh = Warehouse(tmp_path / "wh")
    layers = [1, 2, 3, 4]
    with wh.run("activations", {"t": 1}, model_id=lm.model_id) as run:
        stats = capture_into(run, lm, items, layers=layers, chunk=3)
    assert stats["captured"] == 6 and stats["errors"] == 1 and "empty" in stats["error_examples"]
    con = wh.connect()
    assert con.execute("SELECT count(*) FROM activations").fetchone()[0] == 6 * 4 * 3

    vectors = build_vectors(
        con,
        run.run_id,
        sides,
        trait="evil",
        trait_version="v",
        model_id=lm.model_id,
        n_layers=4,
        poolings=["response_avg", "prompt_last"],
        layers=layers,
        provenance={"run": run.run_id},
    )
    direct = capture_encoded(lm, encode_items(lm.tokenizer, items[:6]), layers=layers)
    pos = [i for i in range(6) if i % 2 == 0]
    neg = [i for i in range(6) if i % 2 == 1]
    for vector in vectors:
        expected = direct.values[vector.pooling][pos].mean(0) - direct.values[vector.pooling][neg].mean(0)
        torch.testing.assert_close(vector.values[1:], expected, rtol=1e-5, atol=1e-6)
        assert (vector.n_pos, vector.n_neg) == (3, 3)


def test_capture_resumes_without_duplicates(tiny_llama, tmp_path):
    lm = tiny_llama
    items, _ = _items(lm)
    wh = Warehouse(tmp_path / "wh")
    config = {"t": 2}

    class Boom(Exception):
        pass

    calls = []

    def stop_after_first_chunk(done, total):
        calls.append(done)
        if len(calls) == 1:
            raise Boom

    try:
        with wh.run("activations", config) as run:
            capture_into(run, lm, items, layers=[2], chunk=2, progress=stop_after_first_chunk)
    except Boom:
        pass
    with wh.run("activations", config) as run:
        stats = capture_into(run, lm, items, layers=[2], chunk=2)
    assert run.status_before == "resumed" and stats["resumed_from"] == 2
    con = wh.connect()
    counts = con.execute("SELECT source_id, count(*) FROM activations GROUP BY 1").fetchall()
    assert sorted(counts) == sorted((f"g{i}", 3) for i in range(6))
