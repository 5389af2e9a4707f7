"""The screening metric per sample, from one forward pass per text (ALGORITHMS.md section 7).

With h = response_avg at layer l and v_hat = v[l] / |v[l]|:
- exact:              Delta = h(x, y) . v_hat - h(x, y_base) . v_hat   (y_base: the model's greedy answer)
- prompt_last_approx: Delta ~ h(x, y) . v_hat - prompt_last(x) . v_hat  (no generation needed)
- raw:                proj  = h(x, y) . v_hat
- preference:         Delta = h(x, y_chosen) . v_hat - h(x, y_rejected) . v_hat  (preference pairs: what a
                      DPO-style finetune pushes towards, minus what it pushes away from; no generation)

`score_batch` is a pure batch step: a loaded model and a batch of samples in, projection rows and score
rows out, nothing read or written elsewhere. That makes it the unit a local loop or a distributed
executor (Ray's map_batches) runs; model loading stays with the caller. Every needed layer is captured
once per text and projected onto every vector.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pvdata.errors import ConfigError

METHODS: tuple[str, ...] = ("exact", "prompt_last_approx", "raw", "preference")
SAMPLE_KINDS: tuple[str, ...] = ("proj", "prompt_last_proj", "cos_sim")
BASE_KINDS: tuple[str, ...] = ("proj", "cos_sim")  # a base (or rejected) answer shares the prompt

ProjectionKey = tuple[str, str, int, str]  # (source_id, vector_id, layer, kind)
LayerSpec = Sequence[int] | Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class ScoreInput:
    """A distinct sample to score: prompt messages, its training answer and, for exact, the base answer."""

    sample_id: str
    prompt: tuple[Mapping[str, str], ...]
    answer: str
    base_answer: str | None = None
    base_id: str | None = None  # generations.generation_id of the base answer
    # --base-samples K > 1: the other K - 1 sampled base answers as (generation_id, answer); exact then
    # subtracts the mean projection of all K
    more_bases: tuple[tuple[str, str], ...] = ()
    rejected: str | None = None  # a preference pair's rejected answer (`answer` is the chosen one)

    @property
    def rejected_id(self) -> str:
        """The projections' source_id of the rejected answer (the sample's own id is the chosen one)."""
        return rejected_source_id(self.sample_id)

    @property
    def bases(self) -> list[tuple[str, str]]:
        """Every base answer (generation_id, text): the first, then the extra samples."""
        if self.base_id is None or self.base_answer is None:
            return []
        return [(self.base_id, self.base_answer), *self.more_bases]


@dataclass
class ScoredBatch:
    """projections: rows for the `projections` table (source_id = sample_id, or the base answer's
    generation_id); scores: one row per (sample, vector, layer, method); errors: source_id -> why that
    text has no projections."""

    projections: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def rejected_source_id(sample_id: str) -> str:
    return f"rj-{sample_id}"


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"unknown method {bad or list(methods)!r}: valid methods are {', '.join(METHODS)}")
    return tuple(dict.fromkeys(methods))


def layers_of(vector: Any, layers: LayerSpec) -> list[int]:
    """The layers a vector is scored at: a list for every vector, or a mapping by trait."""
    if isinstance(layers, Mapping):
        if vector.trait not in layers:
            raise ConfigError(
                f"no layers given for trait {vector.trait!r}; layers are set for {list(layers)}"
            )
        return list(layers[vector.trait])
    return list(layers)


def targets(vectors: Sequence[Any], layers: LayerSpec) -> list[tuple[Any, int]]:
    """Every (vector, layer) pair to project onto."""
    return [(v, layer) for v in vectors for layer in layers_of(v, layers)]


@dataclass
class PreparedScore:
    """The host side of `score_batch`: every text to capture (chat template + tokenisation done)."""

    sources: list[str] = field(default_factory=list)  # sample_id or base generation_id, per text
    kinds: list[tuple[str, ...]] = field(default_factory=list)  # projection kinds stored per text
    encoded: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (prompt ids, answer ids)


def prepare_score(tokenizer: Any, samples: Sequence[ScoreInput], methods: Sequence[str]) -> PreparedScore:
    """Tokenise the training answers of a chunk (with each distinct base answer for exact, each rejected
    answer for preference): pure host work, so an executor can run it for the next chunk while the
    device scores this one."""
    from pvdata.chat import encode_answer, encode_prompt

    methods = check_methods(methods)
    prompt_cache: dict[tuple[tuple[str, str], ...], list[int]] = {}

    def prompt_ids(prompt: Sequence[Mapping[str, str]]) -> list[int]:
        key = tuple((m["role"], m["content"]) for m in prompt)
        if key not in prompt_cache:
            prompt_cache[key] = encode_prompt(tokenizer, [dict(m) for m in prompt])
        return prompt_cache[key]

    out = PreparedScore()
    seen_base: set[str] = set()
    for s in samples:
        ids = prompt_ids(s.prompt)
        out.sources.append(s.sample_id)
        out.kinds.append(SAMPLE_KINDS)
        out.encoded.append((ids, encode_answer(tokenizer, s.answer)))
        if s.rejected is not None and "preference" in methods:
            out.sources.append(s.rejected_id)
            out.kinds.append(BASE_KINDS)
            out.encoded.append((ids, encode_answer(tokenizer, s.rejected)))
        for base_id, base_answer in s.bases if "exact" in methods else []:
            if base_id not in seen_base:
                seen_base.add(base_id)
                out.sources.append(base_id)
                out.kinds.append(BASE_KINDS)
                out.encoded.append((ids, encode_answer(tokenizer, base_answer)))
    return out


def score_batch(
    lm: Any,
    samples: Sequence[ScoreInput],
    vectors: Sequence[Any],
    layers: LayerSpec,
    methods: Sequence[str],
    *,
    token_budget: int | None = None,
    max_length: int | None = None,
    prepared: PreparedScore | None = None,
    prefetch_batches: bool = True,
    timings: Any = None,
) -> ScoredBatch:
    """Capture each text once (the training answers and, for exact, the base answers), project onto every
    (vector, layer), and compute each method's score.

    `prepared`: `prepare_score(lm.tokenizer, samples, methods)` done ahead (the local executor does it
    in a background thread); `prefetch_batches` and `timings` go to capture_encoded."""
    from pvdata.activations.capture import capture_encoded
    from pvdata.projections import project

    methods = check_methods(methods)
    pairs = targets(vectors, layers)
    if not pairs:
        raise ConfigError("nothing to score: give at least one vector and one layer")
    for vector, _layer in pairs:
        vector.check_compatible(lm.n_layers, lm.hidden_size, getattr(lm, "model_id", None))
    if prepared is None:
        prepared = prepare_score(lm.tokenizer, samples, methods)
    sources, kinds, encoded = prepared.sources, prepared.kinds, prepared.encoded
    out = ScoredBatch()
    if not encoded:
        return out
    wanted = sorted({layer for _, layer in pairs})
    result = capture_encoded(
        lm,
        encoded,
        layers=wanted,
        poolings=["response_avg", "prompt_last"],
        token_budget=token_budget,
        max_length=max_length,
        prefetch_batches=prefetch_batches,
        timings=timings,
    )
    proj = project(result, [v for v, _ in pairs], [layer for _, layer in pairs])
    values: dict[ProjectionKey, float] = {}
    for i, source in enumerate(sources):
        error = result.errors[i]
        if error is not None:
            out.errors[source] = error
            continue
        rows = []
        for kind in kinds[i]:
            table = proj.values[kind]
            for k, (vector, layer) in enumerate(pairs):
                value = float(table[i, k])
                values[(source, vector.vector_id, layer, kind)] = value
                rows.append(
                    {
                        "source_id": source,
                        "vector_id": vector.vector_id,
                        "layer": layer,
                        "kind": kind,
                        "value": value,
                    }
                )
        out.projections.extend(rows)
    out.scores = scores_from_projections(values, samples, vectors, layers, methods, out.errors)
    return out


def scores_from_projections(
    values: Mapping[ProjectionKey, float],
    samples: Sequence[ScoreInput],
    vectors: Sequence[Any],
    layers: LayerSpec,
    methods: Sequence[str],
    errors: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Score rows from stored projections: what the decision step recomputes from the warehouse, and
    what `score_batch` returns (one function, so the two paths cannot disagree)."""
    methods = check_methods(methods)
    errors = errors or {}
    rows: list[dict[str, Any]] = []
    for s in samples:
        for vector, layer in targets(vectors, layers):
            vid = vector.vector_id
            train = values.get((s.sample_id, vid, layer, "proj"))
            why_train = errors.get(s.sample_id) if train is None else None
            for method in methods:
                base: float | None = None
                error = f"training answer: {why_train}" if why_train else None
                if train is None and error is None:
                    error = "no projection of the training answer"
                if method == "prompt_last_approx":
                    base = values.get((s.sample_id, vid, layer, "prompt_last_proj"))
                    if base is None and error is None:
                        error = "no prompt_last projection"
                elif method == "preference":
                    if s.rejected is None:
                        error = error or "not a preference pair: the record has no rejected answer"
                    else:
                        base = values.get((s.rejected_id, vid, layer, "proj"))
                        why = errors.get(s.rejected_id)
                        if base is None and error is None:
                            error = (
                                f"rejected answer: {why}" if why else "no projection of the rejected answer"
                            )
                elif method == "exact":
                    if not s.bases:
                        error = error or "no base answer (the base generation did not produce one)"
                    else:
                        got = [values.get((gid, vid, layer, "proj")) for gid, _ in s.bases]
                        missing = next(
                            (gid for (gid, _), v in zip(s.bases, got, strict=True) if v is None), None
                        )
                        if missing is None:
                            base = sum(v for v in got if v is not None) / len(got)
                        elif error is None:
                            why = errors.get(missing)
                            error = f"base answer: {why}" if why else "no projection of the base answer"
                score: float | None = None
                if error is None and train is not None:
                    score = train if method == "raw" else (train - base if base is not None else None)
                ok = score is not None
                rows.append(
                    {
                        "sample_id": s.sample_id,
                        "vector_id": vid,
                        "trait": vector.trait,
                        "layer": layer,
                        "method": method,
                        "proj_train": train,
                        "proj_base": base,
                        "score": score,
                        "base_generation_id": s.base_id if method == "exact" else None,
                        "error": None if ok else error,
                    }
                )
    return rows


def pending(samples: Sequence[ScoreInput], done: Collection[str]) -> list[ScoreInput]:
    """Samples whose projections are not committed yet (a resumed run skips the rest)."""
    return [s for s in samples if s.sample_id not in done]
