"""`pvdata monitor`: does the last prompt token already know the trait is coming? (paper section 3.3)

The trait's evaluation questions are asked under a ladder of system prompts, from trait-suppressing to
trait-eliciting. Every answer is generated and judged, and the prompt_last projection of its prompt (plus
proj and cos_sim of the answer) on the persona vector is stored in `projections` next to the judgments,
so the correlation is one query: warehouse/queries/projection_vs_score.sql.

Default ladder from the trait file: each instruction pair gives a suppressing rung (the neg system
prompt), and all share the neutral rung (no system prompt) and the eliciting rungs (pos system prompts).
`generations.instruction_index` holds the rung index (0 = most suppressing) and `polarity` its side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pvdata.errors import ConfigError
from pvdata.pipelines.progress import Log, stderr_log


@dataclass(frozen=True)
class Rung:
    level: int  # <0 suppressing, 0 neutral, >0 eliciting
    polarity: str  # neg | none | pos
    system_prompt: str | None


@dataclass
class MonitorConfig:
    trait: str
    model: str
    vector: str | None = None  # file, warehouse id (prefix), or the trait's latest vector for the model
    layers: list[int] = field(default_factory=list)  # default: every layer the vector was built at
    ladder: list[str | None] | None = None  # system prompts, suppressing -> eliciting; None = no system
    judge: str = "none"
    questions: int = 20
    n_per_question: int = 1
    temperature: float | None = None
    max_new_tokens: int = 200
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    token_budget: int | None = None


@dataclass
class RungSummary:
    rung: int
    level: int
    system_prompt: str | None
    n: int
    mean_projection: float | None
    mean_score: float | None


@dataclass
class MonitorResult:
    run_id: str
    generate_run: str
    judge_runs: dict[str, str]
    vector_id: str
    layer: int
    rungs: list[RungSummary]
    correlation: dict[int, float | None]  # layer -> Pearson r(prompt_last_proj, trait score)
    message: str = ""


def default_ladder(trait: Any) -> list[Rung]:
    """neg prompts (level -1), no system prompt (0), pos prompts (+1); one rung each."""
    from pvdata.traits import system_prompt

    n = len(trait.instructions)
    return (
        [Rung(-1, "neg", system_prompt(trait, "neg", i)) for i in range(n)]
        + [Rung(0, "none", None)]
        + [Rung(1, "pos", system_prompt(trait, "pos", i)) for i in range(n)]
    )


def custom_ladder(prompts: Sequence[str | None]) -> list[Rung]:
    """A user's ladder: levels centred on the middle rung so the sign reads suppress/elicit."""
    if len(prompts) < 2:
        raise ConfigError("a monitoring ladder needs at least 2 system prompts (suppressing -> eliciting)")
    mid = (len(prompts) - 1) / 2
    return [
        Rung(round(i - mid), "none", (p or None) if isinstance(p, str) else None)
        for i, p in enumerate(prompts)
    ]


def plan(trait: Any, cfg: MonitorConfig) -> tuple[list[Rung], list[Any]]:
    """The rungs and one GenItem per (rung, question); checked before any model loads."""
    from pvdata.generation.base import GenerationRequest
    from pvdata.pipelines.generate_stage import GenItem

    questions = trait.split_questions("eval")
    if not 1 <= cfg.questions <= len(questions):
        raise ConfigError(
            f"--questions {cfg.questions}: trait {trait.name} has 1..{len(questions)} eval questions"
        )
    rungs = custom_ladder(cfg.ladder) if cfg.ladder is not None else default_ladder(trait)
    items = []
    for r, rung in enumerate(rungs):
        for q, question in enumerate(questions[: cfg.questions]):
            meta = {
                "trait": trait.name,
                "split": "eval",
                "polarity": rung.polarity,
                "question_id": f"{trait.name}/eval/{q}",
                "instruction_index": r,
            }
            items.append(GenItem(GenerationRequest.from_question(question, system=rung.system_prompt), meta))
    return rungs, items


def run_monitor(
    cfg: MonitorConfig,
    warehouse: str,
    *,
    force: bool = False,
    log: Log = stderr_log,
    lm: Any = None,
    judge: Any = None,
) -> MonitorResult:
    from pvdata.generation.base import SamplingParams
    from pvdata.generation.hf import HFBackend
    from pvdata.judge import make_judge
    from pvdata.judge.pipeline import judge_generation_run
    from pvdata.judge.rubrics import COHERENCE
    from pvdata.models import load_model
    from pvdata.pipelines.generate_stage import generate_into
    from pvdata.traits import load_trait
    from pvdata.vectors.store import resolve_vector
    from pvdata.warehouse import Warehouse

    trait = load_trait(cfg.trait)
    rungs, items = plan(trait, cfg)
    wh = Warehouse(warehouse)
    vector = resolve_vector(wh, cfg.vector, trait=trait.name, model_id=cfg.model)
    layers = list(cfg.layers) or list(vector.layers) or list(range(1, vector.n_layers + 1))
    layers = [layer for layer in layers if layer > 0 or cfg.layers]  # row 0 (embeddings) only on request
    if lm is None:
        log(f"loading {cfg.model}")
        lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    vector.check_compatible(lm.n_layers, lm.hidden_size, lm.model_id)
    for layer in layers:
        lm.layers.check_layer(layer)
    params = SamplingParams(
        n=cfg.n_per_question, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
    )
    gen_config = {
        "stage": "monitor.generate",
        "trait_version": trait.trait_version,
        "model": cfg.model,
        "rungs": [r.system_prompt for r in rungs],
        "questions": cfg.questions,
        "sampling": params.to_json(),
    }
    with wh.run("generate", gen_config, model_id=cfg.model, force=force) as run:
        if run.skipped:
            log(f"[1/3] answers: {run.message}")
        else:
            log(f"[1/3] {len(rungs)} rungs x {cfg.questions} questions x {params.n} -> {run.run_id}")
            run.stats.update(generate_into(run, HFBackend(lm, token_budget=cfg.token_budget), items, params))
        generate_run = run.run_id
    judge_runs: dict[str, str] = {}
    if cfg.judge != "none" or judge is not None:
        judge_obj = judge or make_judge(cfg.judge)
        for metric, rubric in ((trait.name, trait.rubric), ("coherence", COHERENCE)):
            summary = judge_generation_run(
                warehouse, generate_run, judge_obj, metric=metric, rubric=rubric, force=force
            )
            judge_runs[metric] = summary.run_id
            log(f"[2/3] judged {metric}: n {summary.n}, valid {summary.n_valid}, mean {summary.mean_score}")
    else:
        log("[2/3] judging skipped (--judge none): projections only, no correlation")
    config = {"config": asdict(cfg), "generate_run": generate_run, "vector_id": vector.vector_id}
    with wh.run(
        "monitor",
        config,
        parent_run_ids=[generate_run, *judge_runs.values()],
        model_id=cfg.model,
        force=force,
    ) as run:
        if run.skipped:
            log(f"[3/3] projections: {run.message}")
        else:
            _register_vector(run, wh, vector)
            n = _project_into(run, lm, wh, generate_run, vector, layers, cfg.token_budget)
            log(f"[3/3] projected {n} answers x {len(layers)} layers -> {run.run_id}")
        monitor_run, message = run.run_id, run.message
    rungs_out, corr = _summarise(wh, monitor_run, generate_run, judge_runs.get(trait.name), rungs, layers)
    mid = layers[len(layers) // 2]
    return MonitorResult(
        monitor_run, generate_run, judge_runs, vector.vector_id, mid, rungs_out[mid], corr, message
    )


def _register_vector(run: Any, wh: Any, vector: Any) -> None:
    """A vector given as a file is stored with the run, so SQL can join projections to its trait."""
    from pvdata.vectors.store import vector_columns

    con = wh.connect()
    tables = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    if "vectors_all" in tables:
        known = con.execute(
            "SELECT count(*) FROM vectors_all WHERE vector_id = ?", [vector.vector_id]
        ).fetchone()[0]
        if known:
            return
    run.writer("vectors").write_columns(vector_columns(vector))


def _project_into(
    run: Any, lm: Any, wh: Any, generate_run: str, vector: Any, layers: list[int], budget: int | None
) -> int:
    """proj, prompt_last_proj and cos_sim of each answer, committed per chunk (a rerun resumes)."""
    from pvdata.activations.capture import capture_encoded
    from pvdata.pipelines.capture_stage import CaptureItem, encode_items
    from pvdata.projections import project

    rows = (
        wh.connect()
        .execute(
            "SELECT generation_id, prompt_text, answer FROM generations WHERE run_id = ? ORDER BY 1",
            [generate_run],
        )
        .fetchall()
    )
    done = run.done_ids("projections", "source_id")
    todo = [CaptureItem(gid, prompt, answer) for gid, prompt, answer in rows if gid not in done]
    writer = run.writer("projections")
    for start in range(0, len(todo), 128):
        part = todo[start : start + 128]
        result = capture_encoded(
            lm,
            encode_items(lm.tokenizer, part),
            layers=layers,
            poolings=["response_avg", "prompt_last"],
            token_budget=budget,
        )
        proj = project(result, [vector] * len(layers), layers)
        out = list(proj.rows([item.source_id for item in part]))
        if out:
            writer.write(out)
        run.stats["errors"] = run.stats.get("errors", 0) + sum(e is not None for e in result.errors)
    run.stats["projected"] = len(rows)
    return len(todo)


def _summarise(
    wh: Any, monitor_run: str, generate_run: str, score_run: str | None, rungs: list[Rung], layers: list[int]
) -> tuple[dict[int, list[RungSummary]], dict[int, float | None]]:
    """Per layer: mean prompt_last projection (and trait score) per rung, and r over all answers."""
    con = wh.connect()
    score_join = "LEFT JOIN judgments AS j ON j.generation_id = g.generation_id AND j.run_id = ?"
    rows = con.execute(
        f"""SELECT p.layer, g.instruction_index, count(*), avg(p.value), avg(j.score), corr(p.value, j.score)
            FROM projections AS p JOIN generations AS g ON g.generation_id = p.source_id AND g.run_id = ?
            {score_join}
            WHERE p.run_id = ? AND p.kind = 'prompt_last_proj'
            GROUP BY GROUPING SETS ((p.layer, g.instruction_index), (p.layer))""",
        [generate_run, score_run or "", monitor_run],
    ).fetchall()
    per_layer: dict[int, list[RungSummary]] = {layer: [] for layer in layers}
    corr: dict[int, float | None] = {}
    for layer, rung, n, mean_p, mean_s, r in rows:
        if rung is None:
            corr[int(layer)] = None if r is None else float(r)
            continue
        spec = rungs[int(rung)]
        per_layer[int(layer)].append(
            RungSummary(int(rung), spec.level, spec.system_prompt, n, mean_p, mean_s)
        )
    for summaries in per_layer.values():
        summaries.sort(key=lambda s: s.rung)
    return per_layer, corr


def summary_lines(result: MonitorResult, cfg: MonitorConfig) -> list[str]:
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    lines = [
        f"monitor run {result.run_id}: trait {cfg.trait}, model {cfg.model}, vector {result.vector_id}",
        f"layer {result.layer}: mean prompt_last projection per rung (suppressing -> eliciting)",
        f"{'rung':>4}  {'level':>5}  {'n':>4}  {'proj':>8}  {'score':>6}  system prompt",
    ]
    for s in result.rungs:
        prompt = "(none)" if s.system_prompt is None else s.system_prompt[:60]
        lines.append(
            f"{s.rung:>4}  {s.level:>+5d}  {s.n:>4}  {fmt(s.mean_projection):>8}  "
            f"{fmt(s.mean_score):>6}  {prompt}"
        )
    if any(r is not None for r in result.correlation.values()):
        best = max(
            (k for k, r in result.correlation.items() if r is not None),
            key=lambda k: result.correlation[k] or 0,
        )
        lines.append(
            f"r(prompt_last_proj, trait score): best layer {best} r = {fmt(result.correlation[best])}"
        )
    lines.append("next: pvdata sql --file warehouse/queries/projection_vs_score.sql")
    return lines
