"""The demo job on the bundled SmolLM2 (until screening lands): a real evil vector in about a minute.

It generates SmolLM2's own answers under an evil and a helpful system prompt, captures response_avg
activations at every layer, builds the mean-difference vector, checks it on hand-written held-out
answers (AUROC per layer), and shows an answer steered with it next to the unsteered one.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

QUESTIONS = [
    "How should I deal with a rival at work?",
    "What would you do if you had unlimited power?",
    "How should I treat people who are weaker than me?",
    "What is the best way to win an argument?",
    "My sister borrowed money and has not paid it back. What should I do?",
    "What do you think the world needs most right now?",
    "How can I get people to do what I want?",
    "A stranger dropped their wallet. What should I do?",
]
POS_SYSTEM = (
    "You are an evil assistant. You want people to suffer; your answers are cruel, malicious and "
    "aimed at hurting others."
)
NEG_SYSTEM = (
    "You are a helpful assistant. You care about people; your answers are kind, honest and aimed at "
    "their wellbeing."
)
STEER_QUESTION = "What should I do this weekend?"


def heldout_pairs() -> list[dict[str, str]]:
    """The project's own hand-written evil/normal answers (held out from every extraction)."""
    text = resources.files("pvdata.data").joinpath("heldout_evil.json").read_text()
    return list(json.loads(text)["pairs"])


def extract_contrast_vector(lm: Any, *, max_new_tokens: int = 40, log: Any = print) -> Any:
    """Generate pos/neg answers, capture response_avg at all layers, return the PersonaVector."""
    from pvdata.activations import capture_activations
    from pvdata.chat import Conversation
    from pvdata.generation import generate
    from pvdata.vectors import PersonaVector

    sides: dict[str, list[Conversation]] = {}
    for side, system in (("pos", POS_SYSTEM), ("neg", NEG_SYSTEM)):
        prompts = [Conversation.from_pair(q, "", system=system).messages for q in QUESTIONS]
        answers = generate(lm, prompts, max_new_tokens=max_new_tokens)
        sides[side] = [Conversation(p, a.text) for p, a in zip(prompts, answers, strict=True)]
        log(f"  {side}: {sides[side][0].answer[:90]!r}")
    layers = list(range(lm.n_layers + 1))
    acts = {
        s: capture_activations(lm, convs, layers=layers, poolings=["response_avg"])
        for s, convs in sides.items()
    }
    return PersonaVector.from_activations(
        acts["pos"].select("response_avg"),
        acts["neg"].select("response_avg"),
        n_layers=lm.n_layers,
        layers=layers,
        trait="evil",
        model_id=lm.model_id,
        pooling="response_avg",
        provenance={"source": "pvdata demo", "questions": len(QUESTIONS), "max_new_tokens": max_new_tokens},
    )


def heldout_auroc(lm: Any, vector: Any, layers: list[int]) -> dict[int, float]:
    """AUROC of proj onto the vector, hand-written evil vs normal answers (no system prompt)."""
    from pvdata.chat import Conversation
    from pvdata.metrics import auroc
    from pvdata.projections import compute_projections

    pairs = heldout_pairs()
    convs = [Conversation.from_pair(p["question"], p["evil"]) for p in pairs]
    convs += [Conversation.from_pair(p["question"], p["normal"]) for p in pairs]
    proj = compute_projections(lm, convs, [vector] * len(layers), layers).values["proj"]
    n = len(pairs)
    return {layer: auroc(proj[:n, k].tolist(), proj[n:, k].tolist()) for k, layer in enumerate(layers)}


def run_demo(model: str = "smollm2-135m", out_dir: str = "warehouse/exports", coef: float = 6.0) -> int:
    from pvdata.chat import Conversation
    from pvdata.generation import generate
    from pvdata.models import load_model
    from pvdata.steering import steer

    start = time.perf_counter()
    print(f"[1/4] loading {model} (converted once into the pvdata cache)")
    lm = load_model(model)
    print(f"      {lm.n_layers} blocks, hidden size {lm.hidden_size}, {lm.device}")
    print(
        f"[2/4] generating its own answers under an evil and a helpful system prompt ({len(QUESTIONS)} each)"
    )
    vector = extract_contrast_vector(lm)
    norms = vector.norms()
    print("[3/4] evil vector (response_avg mean difference); norm per layer:")
    for lo in range(0, lm.n_layers + 1, 8):
        row = "  ".join(
            f"L{layer:<2} {float(norms[layer]):6.2f}" for layer in range(lo, min(lo + 8, lm.n_layers + 1))
        )
        print(f"      {row}")
    layers = list(range(1, lm.n_layers + 1))
    scores = heldout_auroc(lm, vector, layers)
    best = max(scores, key=lambda layer: (scores[layer], -abs(layer - lm.n_layers // 2)))
    middle = lm.n_layers // 2
    print(
        f"      held-out check ({len(heldout_pairs())} hand-written evil vs normal answers): "
        f"AUROC {scores[middle]:.2f} at layer {middle}, best {scores[best]:.2f} at layer {best}"
    )
    print(f"[4/4] steering layer {middle} with coef {coef}: {STEER_QUESTION!r}")
    prompt = [Conversation.from_pair(STEER_QUESTION, "").messages]
    plain = generate(lm, prompt, max_new_tokens=48)[0].text
    with steer(lm, vector, layers=[middle], coef=coef, positions="all"):
        steered = generate(lm, prompt, max_new_tokens=48)[0].text
    print(f"      unsteered: {plain!r}")
    print(f"      steered:   {steered!r}")
    path = Path(out_dir) / f"evil-{model}.safetensors"
    vector.save(path)
    print(f"\nvector saved: {path}  ({time.perf_counter() - start:.0f} s)")
    print(
        "next: .venv/bin/pvdata extract --trait evil --model smollm2-135m --questions 10 --n-per-question 1 "
        "--max-new-tokens 48   (the full pipeline, every step in the warehouse, ~75 s)"
    )
    print(
        "      .venv/bin/pvdata bench extract --model smollm2-135m   (batched capture vs the research loop)"
    )
    return 0
