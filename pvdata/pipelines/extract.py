"""`pvdata extract`: trait definition -> pos/neg rollouts -> judged -> filtered -> activations -> vectors.

Each step is its own warehouse run (generate, judge x2, activations, vectors) with a deterministic id
and lineage, and the `extract` run that closes the job lists them all as parents. A rerun after a kill
skips finished steps and resumes the step in flight (ALGORITHMS.md sections 3 and 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError
from pvdata.executors.base import EXECUTION_FIELDS
from pvdata.pipelines.progress import Log, rate_progress, stderr_log


@dataclass
class ExtractConfig:
    trait: str
    model: str
    judge: str = "none"
    questions: int = 20
    instructions: int = 5
    n_per_question: int = 10
    max_new_tokens: int = 1000
    temperature: float | None = None  # paper: 1.0 when n > 1, else greedy
    top_p: float = 1.0
    filter: str | None = None  # paper when judged, none when judge is none
    threshold: float = 50.0
    coherence_min: float = 50.0
    layers: list[int] | None = None  # all
    poolings: list[str] = field(default_factory=lambda: ["prompt_avg", "response_avg", "prompt_last"])
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    adapter: str | None = None
    activation_dtype: str = "float32"
    token_budget: int | None = None
    max_length: int | None = None  # longer rollouts are not captured (default: the model's context)
    compile: str | None = None  # torch.compile mode of the captured blocks (same values, not in a config)
    judge_concurrency: int = 64
    export_dir: str | None = None  # default: <warehouse>/exports
    # where generation and capture run (docs/SCALE.md); not part of any run's config (EXECUTION_FIELDS)
    executor: str = "local"
    ray_address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    worker_retries: int = 3

    def executor_config(self) -> Any:
        from pvdata.executors import executor_config

        return executor_config(self)

    def resolved_filter(self) -> str:
        if self.filter is None:
            return "none" if self.judge == "none" else "paper"
        if self.filter != "none" and self.judge == "none":
            raise ConfigError(
                f"--filter {self.filter} needs trait scores but --judge is none: "
                "give a judge (e.g. --judge openai:gpt-4.1-mini or hf:MODEL) or use --filter none"
            )
        return self.filter


@dataclass
class ExtractResult:
    run_id: str
    stage_runs: dict[str, str]
    kept: dict[str, int]
    vectors: list[Any]
    exported: list[str]
    message: str = ""


def plan_rollouts(trait: Any, cfg: ExtractConfig) -> list[Any]:
    """One GenItem per (question, instruction, polarity); n samples each come from SamplingParams."""
    from pvdata.generation.base import GenerationRequest
    from pvdata.pipelines.generate_stage import GenItem
    from pvdata.traits import system_prompt

    questions = trait.split_questions("extract")
    if not 1 <= cfg.questions <= len(questions):
        raise ConfigError(
            f"--questions {cfg.questions}: trait {trait.name} has 1..{len(questions)} extract questions"
        )
    if not 1 <= cfg.instructions <= len(trait.instructions):
        raise ConfigError(f"--instructions {cfg.instructions}: valid 1..{len(trait.instructions)}")
    items = []
    for q_index, question in enumerate(questions[: cfg.questions]):
        for i_index in range(cfg.instructions):
            for polarity in ("pos", "neg"):
                request = GenerationRequest.from_question(
                    question, system=system_prompt(trait, polarity, i_index)
                )
                meta = {
                    "trait": trait.name,
                    "split": "extract",
                    "polarity": polarity,
                    "question_id": f"{trait.name}/extract/{q_index}",
                    "instruction_index": i_index,
                }
                items.append(GenItem(request, meta))
    return items


def _candidates(con: Any, generation_run_id: str, judge_runs: dict[str, str]) -> list[Any]:
    from pvdata.pipelines.filters import Candidate

    rows = con.execute(
        "SELECT generation_id, polarity, question_id, instruction_index, sample_index FROM generations "
        "WHERE run_id = ? ORDER BY generation_id",
        [generation_run_id],
    ).fetchall()
    scores: dict[str, dict[str, float | None]] = {}
    for metric, run_id in judge_runs.items():
        for gid, score in con.execute(
            "SELECT generation_id, score FROM judgments WHERE run_id = ?", [run_id]
        ).fetchall():
            scores.setdefault(gid, {})[metric] = score
    return [
        Candidate(
            gid,
            pol,
            scores.get(gid, {}).get("trait"),
            scores.get(gid, {}).get("coherence"),
            {"question_id": qid, "instruction_index": ii, "sample_index": si},
        )
        for gid, pol, qid, ii, si in rows
    ]


def run_extract(
    cfg: ExtractConfig,
    warehouse: str,
    *,
    force: bool = False,
    log: Log = stderr_log,
    lm: Any = None,
    judge: Any = None,
) -> ExtractResult:
    """Run (or resume) the whole extraction; `lm`/`judge` may be passed in (tests, notebooks)."""
    from pvdata.generation.base import SamplingParams
    from pvdata.judge import make_judge
    from pvdata.judge.pipeline import judge_generation_run
    from pvdata.judge.rubrics import COHERENCE
    from pvdata.models.compiled import check_toolchain
    from pvdata.pipelines.capture_stage import CaptureItem, capture_into
    from pvdata.pipelines.filters import FilterConfig, apply_filter
    from pvdata.pipelines.generate_stage import generate_into
    from pvdata.pipelines.vector_stage import build_vectors
    from pvdata.traits import load_trait
    from pvdata.vectors.store import vector_columns
    from pvdata.warehouse import Warehouse

    trait = load_trait(cfg.trait)
    if cfg.compile:  # before the first stage: nothing is written when the compiler is missing
        check_toolchain(cfg.executor_config().worker_device(cfg.device))
    filter_cfg = FilterConfig(
        mode=cfg.resolved_filter(),  # type: ignore[arg-type]
        threshold=cfg.threshold,
        coherence_min=cfg.coherence_min,
    )
    params = SamplingParams(
        n=cfg.n_per_question,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    items = plan_rollouts(trait, cfg)
    wh = Warehouse(warehouse)
    stage_runs: dict[str, str] = {}

    executor, backend, facts = _executor(cfg, lm, log)
    layers = cfg.layers if cfg.layers is not None else list(range(facts.n_layers + 1))
    for layer in layers:
        facts.layers.check_layer(layer)

    try:
        # 1. rollouts
        gen_config = {
            "stage": "extract.generate",
            "trait_version": trait.trait_version,
            "model": cfg.model,
            "adapter": cfg.adapter,
            "questions": cfg.questions,
            "instructions": cfg.instructions,
            "sampling": params.to_json(),
            "dtype": facts.dtype,
        }
        with wh.run("generate", gen_config, model_id=cfg.model, force=force) as run:
            stage_runs["generate"] = run.run_id
            if run.skipped:
                log(f"[1/5] rollouts: {run.message}")
            else:
                log(
                    f"[1/5] generating {len(items)} x {params.n} rollouts ({run.status_before}) -> "
                    f"{run.run_id}"
                )
                run.stats.update(
                    generate_into(run, backend, items, params, progress=rate_progress(log, "rollouts"))
                )

        # 2. judging: the trait rubric and coherence
        judge_runs: dict[str, str] = {}
        if cfg.judge != "none" or judge is not None:
            judge_obj = judge or make_judge(cfg.judge, concurrency=cfg.judge_concurrency)
            for metric, name, rubric in (
                ("trait", trait.name, trait.rubric),
                ("coherence", "coherence", COHERENCE),
            ):
                summary = judge_generation_run(
                    warehouse, stage_runs["generate"], judge_obj, metric=name, rubric=rubric, force=force
                )
                judge_runs[metric] = summary.run_id
                stage_runs[f"judge_{metric}"] = summary.run_id
                log(f"[2/5] judged {name}: n {summary.n}, valid {summary.n_valid}, mean {summary.mean_score}")
        else:
            log("[2/5] judging skipped (--judge none)")

        # 3. filter
        con = wh.connect()
        candidates = _candidates(con, stage_runs["generate"], judge_runs)
        decisions = apply_filter(candidates, filter_cfg)
        sides = {d.generation_id: d.polarity for d in decisions if d.keep}
        kept = {
            "pos": sum(1 for s in sides.values() if s == "pos"),
            "neg": sum(1 for s in sides.values() if s == "neg"),
        }
        total = {p: sum(1 for c in candidates if c.polarity == p) for p in ("pos", "neg")}
        log(
            f"[3/5] filter {filter_cfg.mode}: kept pos {kept['pos']}/{total['pos']}, "
            f"neg {kept['neg']}/{total['neg']}"
        )

        # 4. activations of the kept rollouts
        texts = {
            gid: (prompt, answer)
            for gid, prompt, answer in con.execute(
                "SELECT generation_id, prompt_text, answer FROM generations WHERE run_id = ?",
                [stage_runs["generate"]],
            ).fetchall()
        }
        capture_items = [CaptureItem(gid, *texts[gid]) for gid in sorted(sides)]
        act_config = {
            "stage": "extract.activations",
            "generation_run": stage_runs["generate"],
            "judge_runs": judge_runs,
            "filter": filter_cfg.to_json(),
            "layers": layers,
            "poolings": cfg.poolings,
            "dtype": facts.dtype,
            "activation_dtype": cfg.activation_dtype,
            "adapter": cfg.adapter,
            **({"max_length": cfg.max_length} if cfg.max_length is not None else {}),  # older ids kept
        }
        parents = [stage_runs["generate"], *judge_runs.values()]
        with wh.run(
            "activations", act_config, parent_run_ids=parents, model_id=cfg.model, force=force
        ) as run:
            stage_runs["activations"] = run.run_id
            if run.skipped:
                log(f"[4/5] activations: {run.message}")
            else:
                log(f"[4/5] capturing {len(capture_items)} rollouts x {len(layers)} layers -> {run.run_id}")
                run.stats.update(
                    capture_into(
                        run,
                        lm,
                        capture_items,
                        executor=executor,
                        model_id=cfg.model if lm is None else lm.model_id,
                        layers=layers,
                        poolings=cfg.poolings,
                        vector_dtype=cfg.activation_dtype,
                        token_budget=cfg.token_budget,
                        max_length=cfg.max_length,
                        compile=cfg.compile,
                        progress=rate_progress(log, "activations"),
                    )
                )
                run.stats["filter"] = {"kept": kept, "total": total}
    finally:
        executor.close()  # a local Ray cluster it started goes away; the vectors need no model

    # 5. vectors
    vec_config = {
        "stage": "extract.vectors",
        "activations_run": stage_runs["activations"],
        "sides": sorted(sides),
    }
    provenance = {"trait_version": trait.trait_version, **{f"{k}_run": v for k, v in stage_runs.items()}}
    with wh.run(
        "vectors", vec_config, parent_run_ids=[stage_runs["activations"]], model_id=cfg.model, force=force
    ) as run:
        stage_runs["vectors"] = run.run_id
        vectors = build_vectors(
            wh.connect(),
            stage_runs["activations"],
            sides,
            trait=trait.name,
            trait_version=trait.trait_version,
            model_id=cfg.model,
            n_layers=facts.n_layers,
            poolings=cfg.poolings,
            layers=[layer for layer in layers],
            provenance=provenance,
        )
        if not run.skipped:
            writer = run.writer("vectors")
            for vector in vectors:
                writer.write_columns(vector_columns(vector))
            run.stats["vector_ids"] = {v.pooling: v.vector_id for v in vectors}
        log(f"[5/5] vectors: {', '.join(f'{v.pooling} {v.vector_id}' for v in vectors)}")

    export_dir = Path(cfg.export_dir) if cfg.export_dir else Path(warehouse) / "exports"
    exported = []
    for vector in vectors:
        path = export_dir / f"{trait.name}-{_slug(cfg.model)}-{vector.pooling}.safetensors"
        vector.save(path)
        exported.append(str(path))

    summary_stats = {"kept": kept, "total": total, "vector_ids": {v.pooling: v.vector_id for v in vectors}}
    with wh.run(
        "extract",
        {"config": _run_config(cfg), "stages": stage_runs},
        parent_run_ids=list(stage_runs.values()),
        model_id=cfg.model,
        force=force,
    ) as run:
        if not run.skipped:
            run.stats.update(summary_stats)
        message = run.message
    return ExtractResult(run.run_id, stage_runs, kept, vectors, exported, message)


def _executor(cfg: ExtractConfig, lm: Any, log: Log) -> tuple[Any, Any, Any]:
    """(executor, generation backend, model facts): the model loaded here (local), or loaded by each Ray
    worker while the driver reads its layers and width from the config alone."""
    from pvdata.executors import (
        GenerateJob,
        LocalExecutor,
        ModelFacts,
        make_executor,
        model_facts,
        worker_model,
    )
    from pvdata.generation.hf import HFBackend

    ec = cfg.executor_config()
    ec.check(cfg.device)
    ec.check_cluster()
    if ec.name == "local":
        if lm is None:
            from pvdata.models import load_model

            log(f"loading {cfg.model}")
            lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, adapter=cfg.adapter)
        return LocalExecutor(lm), HFBackend(lm, token_budget=cfg.token_budget), ModelFacts.of(lm)
    spec = worker_model(cfg.model, cfg.dtype, cfg.device, ec, adapter=cfg.adapter)
    facts = ModelFacts.of(lm) if lm is not None else model_facts(spec)
    log(f"running the model on {ec.describe()}")
    executor = make_executor(ec, spec, facts=facts, log=log)
    return executor, executor.generation_backend(GenerateJob("hf", cfg.token_budget)), facts


def _run_config(cfg: ExtractConfig) -> dict[str, Any]:
    """What the extraction computes: without where it ran (EXECUTION_FIELDS) or whether it compiled."""
    return {k: v for k, v in asdict(cfg).items() if k not in EXECUTION_FIELDS and k != "compile"}


def _slug(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in model.strip("/").split("/")[-1])


def summary_lines(result: ExtractResult, cfg: ExtractConfig, n_layers: int) -> list[str]:
    """The closing summary: kept per side, norms per layer, what to run next."""
    lines = [f"extract run {result.run_id}: trait {cfg.trait}, model {cfg.model}"]
    if result.message:
        lines.append(f"  {result.message}")
    lines.append(f"  kept: pos {result.kept['pos']}, neg {result.kept['neg']}")
    response = next((v for v in result.vectors if v.pooling == "response_avg"), result.vectors[0])
    norms = response.norms()
    row = "  ".join(f"L{layer} {float(norms[layer]):.2f}" for layer in response.layers)
    lines.append(f"  {response.pooling} norm per layer: {row}")
    for path in result.exported:
        lines.append(f"  saved {path}")
    mid = max(1, n_layers // 2)
    lines += [
        "next:",
        f"  pvdata evaluate --trait {cfg.trait} --model {cfg.model} --vector {response.vector_id} "
        f"--layers {mid} --coefs 0,2,4",
        "  pvdata vectors list",
        '  pvdata sql "SELECT layer, norm FROM vectors WHERE vector_id = '
        f"'{response.vector_id}' ORDER BY layer\"",
    ]
    return lines


def parse_layers(text: str | None) -> Sequence[int] | None:
    if text is None or text == "all":
        return None
    from pvdata.cli.options import parse_int_list

    return parse_int_list(text, what="--layers")
