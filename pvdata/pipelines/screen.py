"""`pvdata screen`: which training samples would push a model towards a trait? (ALGORITHMS.md section 7)

Stage runs, each with a deterministic id and lineage, so a rerun after a kill resumes where it stopped
and a finished stage is never redone:

1. `import` (per dataset, and per --reference): the records as `samples` rows (distinct samples with
   their copies' lines; invalid records with their reason under --skip-invalid).
2. `generate` (method exact only): the model's own greedy answer to every distinct prompt, split
   dataset_base.
3. `activations` (stage screen.projections): one forward pass per text (training answers, base answers)
   capturing every needed layer once, projected onto every trait's vector: `projections` rows with
   source_id = sample_id (training answers) or generation_id (base answers).
4. `screen`: scores from the stored projections, thresholds, decisions: every `screenings` row in one
   commit, after all scores exist.

Then flagged.jsonl / kept.jsonl / unscreened.jsonl / summary.json are written atomically (see
pvdata.screening.output). Everything a user can get wrong is checked by `plan_screen` before any model
loads or any run starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError, DataError
from pvdata.executors.base import EXECUTORS as EXECUTORS  # re-exported: the valid --executor values
from pvdata.pipelines.progress import Log, rate_progress, stderr_log
from pvdata.pipelines.screen_config import DEFAULT_MAX_NEW_TOKENS as DEFAULT_MAX_NEW_TOKENS  # re-exported
from pvdata.pipelines.screen_config import ScreenConfig
from pvdata.pipelines.screen_decisions import (
    GroupSummary,
    build_summary,
    decision_stage,
    note_resume,
)
from pvdata.pipelines.screen_decisions import summary_lines as summary_lines  # re-exported
from pvdata.pipelines.screen_layers import DEFAULT_DEPTH as DEFAULT_DEPTH  # re-exported
from pvdata.pipelines.screen_layers import choose_layers as choose_layers  # re-exported
from pvdata.pipelines.screen_layers import resolve_vectors as resolve_vectors  # re-exported


@dataclass
class ScreenPlan:
    """Everything resolved before a model loads: data, vectors, layers, threshold, output folder."""

    cfg: ScreenConfig
    dataset: Any
    reference: Any
    vectors: dict[str, Any]  # trait -> PersonaVector
    vector_runs: dict[str, str | None]  # trait -> the warehouse run that made it (None: from a file)
    layers: dict[str, list[int]]
    layer_why: dict[str, str]
    methods: tuple[str, ...]
    spec: Any
    dtype: str
    backend: str  # cfg.backend with auto resolved: what the base-answer run records


@dataclass
class ScreenResult:
    run_id: str
    stage_runs: dict[str, str]
    counts: dict[str, int]
    reference_counts: dict[str, int] | None
    groups: list[GroupSummary]
    records: dict[str, int]
    outputs: Any
    layer_why: dict[str, str]
    message: str = ""


# ---- planning: every check before any model loads ---------------------------------------------------


def plan_screen(cfg: ScreenConfig, warehouse: str) -> ScreenPlan:
    """Read the data, resolve vectors and layers, check everything; no model, no run."""
    from pvdata.generation.backends import resolve_backend
    from pvdata.models.compiled import check_toolchain
    from pvdata.models.loading import resolve_dtype
    from pvdata.samples import check_invalid, read_dataset
    from pvdata.samples.hub import is_hub_id
    from pvdata.warehouse import Warehouse

    cfg.check()
    cfg.executor_config().check_cluster()  # an unreachable --ray-address fails now, not after a stage
    spec = cfg.threshold_spec()
    # the dtype where the model runs (a Ray worker's GPU, not the driver's CPU): it is part of the runs'
    # configs, so the same job on either executor is the same run
    where = cfg.executor_config().worker_device(cfg.device)
    if cfg.compile:
        check_toolchain(where)
    dtype = str(resolve_dtype(cfg.dtype, where))
    for path, what in ((cfg.dataset, "dataset"), (cfg.reference, "--reference")):
        if path is not None and not Path(path).expanduser().exists() and not is_hub_id(path):
            raise ConfigError(
                f"{what} {path} not found: give a .jsonl, .json, .csv or .parquet file, a datasets folder "
                "or a Hugging Face hub id owner/name"
            )
    wh = Warehouse(warehouse)
    vectors, runs = resolve_vectors(wh, cfg)
    layers, why = {}, {}
    for trait, vector in vectors.items():
        layers[trait], why[trait] = choose_layers(wh, cfg, vector)
    dataset = read_dataset(cfg.dataset, fmt=cfg.format, columns=cfg.columns(), hf_split=cfg.hf_split)
    check_invalid(dataset, cfg.skip_invalid)
    if not dataset.samples:
        raise DataError(
            f"{dataset.source}: no valid records to screen ({dataset.n_records} record(s), all invalid)"
        )
    reference = None
    if cfg.reference is not None:
        reference = read_dataset(cfg.reference, fmt=None, columns=cfg.columns(), hf_split=cfg.hf_split)
        check_invalid(reference, cfg.skip_invalid)
        if not reference.samples:
            raise ConfigError(
                f"--reference {cfg.reference} has no usable samples ({reference.n_records} record(s), "
                f"{len(reference.invalid)} invalid): a percentile threshold needs clean scored samples"
            )
    methods = tuple(dict.fromkeys(cfg.methods))
    if "preference" in methods:
        for what, data in (("dataset", dataset), ("--reference", reference)):
            if data is not None and not data.n_preference:
                raise ConfigError(
                    "--method preference scores preference pairs (records with 'chosen' and 'rejected'), "
                    f"and the {what} {data.source} holds none: drop the method, or give preference data"
                )
    backend = resolve_backend(cfg.backend, where)
    return ScreenPlan(cfg, dataset, reference, vectors, runs, layers, why, methods, spec, dtype, backend)


# ---- running ------------------------------------------------------------------------------------------


class _LazyModel:
    """Loads the model (local) or starts the executor (ray) on first use, so a rerun whose stages all
    succeeded loads nothing and contacts no cluster."""

    def __init__(self, plan: ScreenPlan, lm: Any, log: Log) -> None:
        self.plan, self._lm, self.log = plan, lm, log
        self._checked = False
        self._executor: Any = None

    def get(self) -> Any:
        if self._lm is None:
            from pvdata.models import load_model

            cfg = self.plan.cfg
            self.log(f"loading {cfg.model}")
            self._lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, layers_path=cfg.layers_path)
        if not self._checked:
            self._check(self._lm.layers, self._lm.hidden_size, self._lm.model_id)
        return self._lm

    def _check(self, layers: Any, hidden: int, model_id: str) -> None:
        for trait, vector in self.plan.vectors.items():
            vector.check_compatible(layers.n_layers, hidden, model_id)
            for layer in self.plan.layers[trait]:
                layers.check_layer(layer)
        self._checked = True

    def executor(self) -> Any:
        """Where the batches run: this process (on `get()`), or Ray workers that each load the model
        (the driver checks the vectors and layers against the model's config, without weights)."""
        if self._executor is None:
            from pvdata.executors import ModelFacts, ModelSpec, make_executor, model_facts, worker_model

            cfg = self.plan.cfg
            ec = cfg.executor_config()
            if ec.name == "local":
                spec = ModelSpec(cfg.model, dtype=cfg.dtype, device=cfg.device, layers_path=cfg.layers_path)
                self._executor = make_executor(ec, spec, lm=self.get, log=self.log)
            else:
                spec = worker_model(cfg.model, cfg.dtype, cfg.device, ec, layers_path=cfg.layers_path)
                facts = ModelFacts.of(self._lm) if self._lm is not None else model_facts(spec)
                self._check(facts.layers, facts.hidden_size, cfg.model)
                self.log(f"running the model on {ec.describe()}")
                self._executor = make_executor(ec, spec, facts=facts, log=self.log)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()


def run_screen(
    cfg: ScreenConfig,
    warehouse: str,
    *,
    out: str | None = None,
    force: bool = False,
    log: Log = stderr_log,
    lm: Any = None,
    backend: Any = None,
) -> ScreenResult:
    """Run (or resume) a screen; `lm` (and a generation `backend` for exact) may be passed in."""
    from pvdata.screening.output import check_out_dir
    from pvdata.warehouse import Warehouse

    plan = plan_screen(cfg, warehouse)
    if backend is not None and cfg.backend == "auto" and getattr(backend, "name", None) in ("hf", "vllm"):
        plan.backend = backend.name  # the backend passed in is the one that answers
    if out is not None:
        check_out_dir(out, _inputs(plan))
    wh = Warehouse(warehouse)
    _note_turns(plan, log)
    model = _LazyModel(plan, lm, log)
    stage_runs: dict[str, str] = {}
    errors: dict[str, dict[str, str]] = {}
    datasets = [("dataset", plan.dataset)] + ([("reference", plan.reference)] if plan.reference else [])
    try:
        for label, data in datasets:
            stage_runs[f"{label}_samples"] = _samples_stage(wh, plan, data, label, force, log)
            base_run = None
            if "exact" in plan.methods:
                base_run = _base_stage(
                    wh, plan, data, label, stage_runs[f"{label}_samples"], model, backend, force, log
                )
                stage_runs[f"{label}_base"] = base_run
            proj_run, errors[label] = _projection_stage(
                wh, plan, data, label, stage_runs[f"{label}_samples"], base_run, model, force, log
            )
            stage_runs[f"{label}_projections"] = proj_run
    finally:
        model.close()
    rows = _scores(wh, plan, plan.dataset, "dataset", stage_runs, errors["dataset"])
    ref_rows = (
        _scores(wh, plan, plan.reference, "reference", stage_runs, errors["reference"])
        if plan.reference
        else None
    )
    run_id, groups, flagged, unscored, message = decision_stage(
        wh, plan, rows, ref_rows, stage_runs, force, log
    )

    paths = check_out_dir(out if out is not None else wh.local_dir("exports", run_id), _inputs(plan))
    summary = build_summary(plan, run_id, stage_runs, groups, len(unscored))
    from pvdata.screening.output import write_outputs

    records = write_outputs(paths, plan.dataset, flagged, unscored, summary)
    log(
        f"[5/5] wrote {paths.flagged.name} ({records['flagged']}), {paths.kept.name} ({records['kept']}), "
        f"{paths.unscreened.name} ({records['unscreened']}), {paths.summary.name} -> {paths.out_dir}"
    )
    return ScreenResult(
        run_id,
        stage_runs,
        plan.dataset.counts(),
        plan.reference.counts() if plan.reference else None,
        groups,
        records,
        paths,
        plan.layer_why,
        message,
    )


def _note_turns(plan: ScreenPlan, log: Log) -> None:
    """A last-turn screen of multi-turn chats leaves out turns that pvdata train trains by default."""
    from pvdata.screening.turns import n_multi_turn

    n = n_multi_turn(plan.dataset.samples) if plan.cfg.turns == "last" else 0
    if n:
        log(
            f"note: {n} sample(s) have assistant turns before the last, which this screen does not score "
            "and pvdata train trains by default (train_on: all_assistant): pass --turns all to score them"
        )


def _inputs(plan: ScreenPlan) -> list[str]:
    return [plan.dataset.source] + ([plan.reference.source] if plan.reference else [])


def _samples_stage(wh: Any, plan: ScreenPlan, data: Any, label: str, force: bool, log: Log) -> str:
    from pvdata.samples import sample_rows

    cfg = plan.cfg
    config = {
        "stage": "screen.samples",
        "dataset_id": data.dataset_id,
        "source": data.source,
        "format": data.format,
        "columns": asdict(cfg.columns()),
        "hf_split": cfg.hf_split,
        "skip_invalid": cfg.skip_invalid,
    }
    with wh.run("import", config, force=force) as run:
        note_resume(run, log)
        if run.skipped:
            log(f"[1/5] {label} samples: {run.message}")
            return str(run.run_id)
        done = run.done_ids("samples", "sample_id")
        rows = [r for r in sample_rows(data) if r["sample_id"] not in done]
        writer = run.writer("samples")
        for start in range(0, len(rows), 10_000):
            writer.write(rows[start : start + 10_000])
        run.stats.update({**data.counts(), "dataset_id": data.dataset_id, "resumed_from": len(done)})
        c = data.counts()
        log(
            f"[1/5] {label} {data.source}: {c['records']} records, {c['distinct']} distinct samples, "
            f"{c['duplicates']} duplicates, {c['invalid']} invalid -> {run.run_id}"
        )
        return str(run.run_id)


def _sampling(cfg: ScreenConfig) -> Any:
    from pvdata.generation.base import SamplingParams

    # one greedy answer (the paper), or K answers sampled at temperature 1 (seeded per sample)
    k = cfg.base_samples
    return SamplingParams(
        n=k, temperature=None if k > 1 else 0.0, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
    )


def base_prompts(data: Any, turns: str = "last") -> list[Any]:
    """One item per distinct prompt (first-seen order): samples sharing a prompt share one base answer.
    With turns "all", each earlier assistant turn's conversation so far is a prompt too."""
    from pvdata.generation.base import GenerationRequest
    from pvdata.pipelines.generate_stage import GenItem
    from pvdata.samples.dataset import prompt_id_of
    from pvdata.screening.turns import earlier_turns

    items: dict[str, Any] = {}
    for sample in data.samples:
        prompts = [sample.prompt] + ([p for _i, p, _a in earlier_turns(sample)] if turns == "all" else [])
        for prompt in prompts:
            pid = prompt_id_of(prompt)
            if pid not in items:
                meta = {
                    "split": "dataset_base",
                    "polarity": "none",
                    "question_id": pid,
                    "sample_id": sample.sample_id,
                }
                items[pid] = GenItem(GenerationRequest(tuple(dict(m) for m in prompt)), meta)
    return list(items.values())


def _base_stage(
    wh: Any,
    plan: ScreenPlan,
    data: Any,
    label: str,
    samples_run: str,
    model: _LazyModel,
    backend: Any,
    force: bool,
    log: Log,
) -> str:
    from pvdata.generation.base import GenerationError
    from pvdata.pipelines.generate_stage import generate_into

    cfg = plan.cfg
    params = _sampling(cfg)
    items = base_prompts(data, cfg.turns)
    config = {
        "stage": "screen.base_answers",
        "dataset_id": data.dataset_id,
        "backend": plan.backend,
        "model": cfg.model,
        "sampling": params.to_json(),
        **({"turns": cfg.turns} if cfg.turns != "last" else {}),  # base answers to earlier turns too
        "dtype": plan.dtype if plan.backend == "hf" else None,
    }
    with wh.run("generate", config, parent_run_ids=[samples_run], model_id=cfg.model, force=force) as run:
        note_resume(run, log)
        if run.skipped:
            log(f"[2/5] {label} base answers: {run.message}")
            return str(run.run_id)
        log(
            f"[2/5] {label}: {'greedy' if params.n == 1 else f'{params.n} sampled'} base answers to "
            f"{len(items)} distinct prompts with {plan.backend}{' (auto)' if cfg.backend == 'auto' else ''} "
            f"({run.status_before}) -> {run.run_id}"
        )
        gen = backend if backend is not None else _make_backend(plan, model)
        run.writer("generations", chunk_rows=cfg.chunk_size)  # generate_into gets this one: commit per chunk
        stats = generate_into(
            run, gen, items, params, chunk=cfg.chunk_size, progress=rate_progress(log, "base answers")
        )
        run.stats.update(stats)
        failed = stats["finish"].get("error", 0)
        if failed:
            raise GenerationError(
                f"{failed} base answer(s) failed and were not written; the others are committed. Rerun the "
                f"same command to retry them (run {run.run_id})"
            )
        return str(run.run_id)


def _make_backend(plan: ScreenPlan, model: _LazyModel) -> Any:
    """hf on the loaded model, vllm, or openai:MODEL; with --executor ray, hf and vllm run on the workers."""
    cfg = plan.cfg
    from pvdata.executors import GenerateJob

    return model.executor().generation_backend(GenerateJob(plan.backend, cfg.token_budget, cfg.dtype))


def _base_answers(wh: Any, base_run: str | None) -> tuple[dict[str, list[tuple[str, str]]], dict[str, int]]:
    """prompt_id -> [(generation_id, answer)] of a base-answer run, in sample order (one when greedy),
    and prompt_id -> how many of its answers were cut at the token budget (finish_reason length)."""
    if base_run is None:
        return {}, {}
    columns = ["question_id", "sample_index", "generation_id", "answer", "finish_reason"]
    table = _run_rows(wh, "generations", base_run, columns)
    out: dict[str, list[tuple[int, str, str]]] = {}
    cut: dict[str, int] = {}
    for q, i, g, a, reason in zip(*(table[c] for c in columns), strict=True):
        out.setdefault(q, []).append((int(i or 0), g, a))
        cut[q] = cut.get(q, 0) + (reason == "length")
    return {q: [(g, a) for _, g, a in sorted(rows)] for q, rows in out.items()}, cut


def _run_rows(wh: Any, table: str, run_id: str, columns: list[str]) -> dict[str, list[Any]]:
    """Columns of everything one run committed to a table (read straight from its files)."""
    t = wh.read_run_table(table, run_id, columns)
    return {c: t.column(c).to_pylist() for c in columns}


def score_inputs(data: Any, base: dict[str, list[tuple[str, str]]], turns: str = "last") -> list[Any]:
    """A ScoreInput per sample (and with turns "all" per earlier assistant turn, id `sample@index`),
    with the base answers of its prompt (prompt_id -> [(generation id, text)]; the first is the one
    scored, the rest are extra samples): what the projection step scores (also the throughput probe's
    input)."""
    from pvdata.samples.dataset import prompt_id_of
    from pvdata.screening.scoring import ScoreInput
    from pvdata.screening.turns import earlier_turns, turn_id

    def one(sid: str, prompt: Any, text: str, rejected: str | None = None) -> Any:
        answers = base.get(prompt_id_of(prompt)) or []
        gid, answer = answers[0] if answers else (None, None)
        return ScoreInput(sid, tuple(prompt), text, answer, gid, tuple(answers[1:]), rejected)

    inputs = []
    for s in data.samples:
        inputs.append(one(s.sample_id, s.prompt, s.answer, s.rejected))
        for index, prompt, text in earlier_turns(s) if turns == "all" else []:
            inputs.append(one(turn_id(s.sample_id, index), prompt, text))
    return inputs


def _projection_stage(
    wh: Any,
    plan: ScreenPlan,
    data: Any,
    label: str,
    samples_run: str,
    base_run: str | None,
    model: _LazyModel,
    force: bool,
    log: Log,
) -> tuple[str, dict[str, str]]:
    from pvdata.executors import ScoreJob
    from pvdata.screening.scoring import pending

    cfg = plan.cfg
    config = {
        "stage": "screen.projections",
        "dataset_id": data.dataset_id,
        "samples_run": samples_run,
        "base_run": base_run,
        "vectors": {t: v.vector_id for t, v in plan.vectors.items()},
        "layers": plan.layers,
        "model": cfg.model,
        "dtype": plan.dtype,
        **({"max_length": cfg.max_length} if cfg.max_length is not None else {}),  # older ids kept
        **({"rejected": True} if "preference" in plan.methods else {}),  # projects the rejected answers too
        **({"turns": cfg.turns} if cfg.turns != "last" else {}),  # and every earlier assistant turn
    }
    parents = [samples_run] + ([base_run] if base_run else []) + [r for r in plan.vector_runs.values() if r]
    inputs = score_inputs(data, _base_answers(wh, base_run)[0], cfg.turns)
    with wh.run("activations", config, parent_run_ids=parents, model_id=cfg.model, force=force) as run:
        note_resume(run, log)
        if run.skipped:
            log(f"[3/5] {label} projections: {run.message}")
            stats = (wh.get_run(run.run_id) or {}).get("stats") or "{}"
            return str(run.run_id), dict(json.loads(stats).get("errors", {}))
        executor = model.executor()
        preference = "preference" in plan.methods
        _register_file_vectors(run, wh, plan)
        done = run.done_ids("projections", "source_id")
        todo = pending(inputs, done)
        # a base answer shared by several samples (or turns) counts once
        n_texts = len(todo) + len({s.base_id for s in todo if s.base_id and s.base_id not in done})
        n_texts += sum(1 for s in todo if s.rejected is not None) if preference else 0
        log(
            f"[3/5] {label}: projections of {n_texts} texts ({run.status_before}, {len(inputs) - len(todo)} "
            f"samples already done) -> {run.run_id}"
        )
        writer = run.writer("projections")
        methods = ("raw",) + (("exact",) if base_run else ()) + (("preference",) if preference else ())
        errors: dict[str, str] = {}
        report = rate_progress(log, "projections")
        vectors = tuple(plan.vectors.values())
        job = ScoreJob(vectors, plan.layers, methods, cfg.token_budget, cfg.max_length, cfg.compile)
        finished = 0
        # chunks in order (local) or as Ray workers finish them; a base answer shared by two chunks in
        # flight is projected by both and written once (the first to arrive)
        for part in executor.score(job, todo, chunk=cfg.chunk_size):
            batch = part.result
            rows = [r for r in batch.projections if r["source_id"] not in done]
            done.update(r["source_id"] for r in rows)
            if rows:
                writer.write(rows)  # a chunk's texts in one call: committed whole or not at all
                writer.flush()
            errors.update(batch.errors)
            finished += len(part.samples)
            report(finished, len(todo))
        run.stats.update({"samples": len(inputs), "resumed_from": len(inputs) - len(todo), "errors": errors})
        return str(run.run_id), errors


def _register_file_vectors(run: Any, wh: Any, plan: ScreenPlan) -> None:
    """Vectors given as files are stored with the run, so SQL can join screenings to their values."""
    from pvdata.vectors.store import vector_columns

    known: set[str] = set(run.done_ids("vectors", "vector_id"))
    con = wh.connect()
    known.update(r[0] for r in con.execute("SELECT DISTINCT vector_id FROM vectors").fetchall())
    writer = None
    for trait, vector in plan.vectors.items():
        if plan.vector_runs.get(trait) is None and vector.vector_id not in known:
            writer = writer or run.writer("vectors")
            writer.write_columns(vector_columns(vector))
    if writer is not None:
        writer.flush()


def _projection_values(wh: Any, run_id: str) -> dict[tuple[str, str, int, str], float]:
    t = _run_rows(wh, "projections", run_id, ["source_id", "vector_id", "layer", "kind", "value"])
    return {
        (s, v, int(layer), k): float(x)
        for s, v, layer, k, x in zip(
            t["source_id"], t["vector_id"], t["layer"], t["kind"], t["value"], strict=True
        )
        if x is not None
    }


def _scores(
    wh: Any, plan: ScreenPlan, data: Any, label: str, stage_runs: dict[str, str], errors: dict[str, str]
) -> list[dict[str, Any]]:
    from pvdata.samples.dataset import prompt_id_of
    from pvdata.screening.scoring import scores_from_projections
    from pvdata.screening.turns import best_turn_rows, turn_owners

    base, cut = _base_answers(wh, stage_runs.get(f"{label}_base"))
    values = _projection_values(wh, stage_runs[f"{label}_projections"])
    inputs = score_inputs(data, base, plan.cfg.turns)
    rows = scores_from_projections(
        values, inputs, list(plan.vectors.values()), plan.layers, plan.methods, errors
    )
    prompt_of = {s.sample_id: prompt_id_of(s.prompt) for s in inputs}
    for row in rows:  # how many base answers this exact score compared with were cut short
        row["base_cut"] = cut.get(prompt_of[row["sample_id"]], 0) if row["method"] == "exact" else 0
    if plan.cfg.turns == "all":
        rows = best_turn_rows(rows, turn_owners(data.samples))
    return rows
