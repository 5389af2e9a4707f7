"""`make demo`: the main job on a fresh machine, offline, on the bundled SmolLM2-135M-Instruct.

1. extract an evil persona vector from the model's own answers under the trait's pos/neg system prompts
   (the issue-5 setting: 10 questions x 5 instruction pairs, no judge offline, 48 new tokens);
2. check it on the project's hand-written held-out evil/normal answers (AUROC);
3. screen the shipped demo chat dataset (96 records: helpful answers mixed with evil, sycophantic and
   hallucinating ones) with the projection difference against the model's own greedy answers, the
   prompt-last approximation and the raw projection; flag what scores above the 95th percentile of a
   clean reference dataset;
4. print the top flagged samples, the dataset-level score, how the flags compare with the dataset's
   hand-written labels, and the next commands.

Every step is an ordinary warehouse run (./warehouse unless --warehouse), so a second `make demo` resumes
or skips what is done, and everything it printed is one SQL query away.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

DATASET = "demo_chat.jsonl"
REFERENCE = "demo_reference.jsonl"
LABELS = "demo_chat_labels.json"
METHODS = ("exact", "prompt_last_approx", "raw")


def demo_labels() -> dict[int, str]:
    """line -> label (normal | evil | sycophantic | hallucinating) of the shipped demo dataset."""
    text = resources.files("pvdata.data").joinpath(LABELS).read_text()
    return {int(x["line"]): str(x["label"]) for x in json.loads(text)["labels"]}


def label_report(con: Any, screen_run: str, labels: dict[int, str]) -> list[str]:
    """Per method: AUROC of the score for evil vs normal records, and what the flagged records are."""
    from pvdata.metrics import auroc

    rows = con.execute(
        "SELECT c.method, c.layer, c.score, c.flagged, s.lines FROM screenings AS c "
        "JOIN samples AS s USING (sample_id, dataset_id) WHERE c.run_id = ? ORDER BY c.method",
        [screen_run],
    ).fetchall()
    by_method: dict[tuple[str, int], list[tuple[float | None, bool, list[int]]]] = {}
    for method, layer, score, is_flagged, lines in rows:
        by_method.setdefault((method, layer), []).append((score, bool(is_flagged), json.loads(lines)))
    out = []
    for (method, layer), items in sorted(by_method.items(), key=lambda kv: METHODS.index(kv[0][0])):
        evil = [s for s, _, ls in items if s is not None and labels[ls[0]] == "evil"]
        normal = [s for s, _, ls in items if s is not None and labels[ls[0]] == "normal"]
        flagged: dict[str, int] = {}
        for _, f, ls in items:
            if f:
                for line in ls:
                    flagged[labels[line]] = flagged.get(labels[line], 0) + 1
        what = ", ".join(f"{n} {label}" for label, n in sorted(flagged.items(), key=lambda kv: -kv[1]))
        out.append(
            f"    {method:<18} L{layer}: AUROC evil vs normal {auroc(evil, normal):.3f}; "
            f"flagged records: {what or 'none'}"
        )
    return out


def _data_path(stack: ExitStack, name: str) -> str:
    """The shipped file, named as the README names it when run from the repository root (the import
    run's config records the path, so the README's example then reuses the demo's runs)."""
    packaged = stack.enter_context(resources.as_file(resources.files("pvdata.data").joinpath(name)))
    relative = Path("pvdata/data") / name
    if relative.is_file() and relative.resolve() == Path(packaged).resolve():
        return str(relative)
    return str(packaged)


def run_demo(
    model: str = "smollm2-135m",
    warehouse: str = "warehouse",
    *,
    percentile: float = 95.0,
    base_tokens: int = 64,
    log: Callable[[str], None] = print,
) -> int:
    from pvdata.heldout import heldout_auroc, heldout_pairs
    from pvdata.models import load_model
    from pvdata.pipelines.extract import ExtractConfig, run_extract
    from pvdata.pipelines.screen import ScreenConfig, run_screen, summary_lines
    from pvdata.warehouse import connect

    start = time.perf_counter()

    def step(text: str) -> None:
        log(f"\n[{time.perf_counter() - start:5.0f} s] {text}")

    quiet: Callable[[str], None] = lambda _m: None  # noqa: E731 - the stages' own progress lines
    step(f"loading {model} (converted once into the pvdata cache)")
    lm = load_model(model)
    log(f"  {lm.n_layers} blocks, hidden size {lm.hidden_size}, {lm.device}; warehouse: {warehouse}")

    step("extracting an evil vector: 10 questions x 5 instruction pairs, pos and neg, 48 new tokens")
    extract_cfg = ExtractConfig(
        trait="evil", model=model, judge="none", questions=10, instructions=5, n_per_question=1,
        max_new_tokens=48, poolings=["response_avg"],
    )  # fmt: skip
    extracted = run_extract(extract_cfg, warehouse, lm=lm, log=quiet)
    vector = extracted.vectors[0]
    norms = vector.norms()
    log(
        f"  run {extracted.run_id}: kept pos {extracted.kept['pos']}, neg {extracted.kept['neg']} (no judge "
        f"offline, so no filter); vector {vector.vector_id}, norm "
        + ", ".join(f"L{layer} {float(norms[layer]):.1f}" for layer in (8, 15, 23) if layer <= lm.n_layers)
    )
    layers = list(range(1, lm.n_layers + 1))
    scores = heldout_auroc(lm, vector, layers)
    best = max(scores, key=lambda layer: scores[layer])
    log(
        f"  held-out check ({len(heldout_pairs())} hand-written evil/normal answer pairs, never used for "
        f"extraction): AUROC {scores[15]:.2f} at layer 15, {scores[23]:.2f} at layer 23, best "
        f"{scores[best]:.2f} at layer {best}"
    )

    step(f"screening the demo dataset for evil ({', '.join(METHODS)}; base answers: {base_tokens} tokens)")
    with ExitStack() as stack:
        data, ref = (_data_path(stack, name) for name in (DATASET, REFERENCE))
        cfg = ScreenConfig(
            dataset=data, model=model, vectors=[vector.vector_id], methods=list(METHODS),
            reference=ref, percentile=percentile, max_new_tokens=base_tokens,
        )  # fmt: skip
        result = run_screen(cfg, warehouse, lm=lm, log=quiet)
    for line in summary_lines(result, cfg):
        if line == "next:":
            break
        log(line)
    summary = json.loads(Path(result.outputs.summary).read_text())
    diff = summary["traits"]["evil"]["mean_projection_difference"]
    log(
        f"  dataset-level score (mean projection difference, exact): {diff:+.3f} "
        "(how far the dataset's answers sit from the model's own answers along the evil vector)"
    )
    log("  against the dataset's hand-written labels (56 normal, 22 evil, 12 sycophantic, 6 hallucinating):")
    for line in label_report(connect(warehouse), result.run_id, demo_labels()):
        log(line)

    step("done. Next:")
    pv = ".venv/bin/pvdata" if Path(".venv/bin/pvdata").exists() else "pvdata"
    where = "" if warehouse == "warehouse" else f" --warehouse {warehouse}"
    log(
        f'  {pv} sql{where} "SELECT c.method, s.line, round(c.score, 3) AS score, c.reason FROM screenings c '
        f"JOIN samples s USING (sample_id, dataset_id) WHERE c.run_id = '{result.run_id}' AND c.flagged "
        'ORDER BY c.method, c.score DESC"'
    )
    log(f"  {pv} sql{where} --query-name screening_summary")
    log(f"  {pv} dashboard{where}            # review the flags, confirm or reject them")
    log(f"  flagged/kept records: {result.outputs.out_dir}")
    return 0
