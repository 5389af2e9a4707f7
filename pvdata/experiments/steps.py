"""The steps every experiment repeats: screen a pool of samples once, average its per-sample scores over
a dataset, finetune on a dataset and read its finetuning shift, optionally judge the finetuned model.

Each step is an ordinary warehouse run (screen, train, evaluate), so a rerun of an experiment skips the
finished ones and resumes the one in flight. A sample's screening scores do not depend on the other
samples of its dataset (only thresholds do), so one screen of the union of every dataset's samples gives
each dataset's scores; tests/test_experiments.py checks that against a direct screen of one dataset.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError

Log = Callable[[str], None]
METHODS = ("exact", "prompt_last_approx", "raw")
DEFAULT_TRAIN_CONFIG = "training/smollm2-135m-cpu.yaml"


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Common:
    """What every experiment needs: model, layer, training budget, screening and judging settings."""

    model: str
    layer: int
    train_config: str | None = None
    judge: str = "none"
    seed: int = 0
    max_new_tokens: int | None = None  # base answers of the exact method (default: pvdata screen's)
    base_samples: int = 1  # exact: mean projection of K sampled base answers (1 = greedy, the paper)
    dtype: str = "auto"
    device: str = "auto"
    eval_questions: int = 20
    eval_n_per_question: int = 1
    eval_max_new_tokens: int = 64
    bootstrap: int = 2000
    screen_layers: list[int] = field(default_factory=list)  # also screened, for the separation table
    max_steps: int | None = None  # overrides the training config's budget (tests, quick looks)
    vector_args: list[str] = field(default_factory=list)  # --vector files or warehouse ids
    vectors: dict[str, Any] = field(default_factory=dict)  # trait -> PersonaVector (resolve_vectors)
    vector_specs: dict[str, str] = field(default_factory=dict)  # trait -> file or id for screen and train

    def train_config_path(self) -> str | None:
        return self.train_config


def resolve_vectors(warehouse: str, common: Common, traits: Sequence[str]) -> None:
    """Each trait's vector (--vector files or ids, else the trait's latest for the model) with the layer
    checked against it; fills common.vectors and common.vector_specs. No model loads."""
    from pvdata.pipelines.screen import ScreenConfig, choose_layers
    from pvdata.pipelines.screen import resolve_vectors as screen_vectors
    from pvdata.warehouse import Warehouse

    wh = Warehouse(warehouse)
    cfg = ScreenConfig(
        dataset="",
        model=common.model,
        traits=list(traits),
        vectors=list(common.vector_args),
        layers=[common.layer, *common.screen_layers],
    )
    vectors, _ = screen_vectors(wh, cfg)
    for trait, vector in vectors.items():
        if min(cfg.layers) < 1:
            raise ConfigError(
                f"--layer {min(cfg.layers)} is out of range: valid layers are 1..{vector.n_layers}"
            )
        choose_layers(wh, cfg, vector)
        common.vectors[trait] = vector
        files = [a for a in common.vector_args if Path(a).is_file()]
        from pvdata.vectors.io import load_vector

        spec = next((f for f in files if load_vector(f).vector_id == vector.vector_id), vector.vector_id)
        common.vector_specs[trait] = spec


def check_train_config(common: Common) -> Any:
    """The training config with the experiment's overrides, validated (data is filled in per dataset)."""
    from pvdata.training.config import build_config

    path = common.train_config_path()
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"--train-config {path}: no such file")
    return build_config(path, _train_overrides(common, "placeholder.jsonl", "placeholder", None, None))


def _train_overrides(
    common: Common,
    data: str,
    trait: str,
    vector_id: str | None,
    out: str | None,
    train_seed: int | None = None,
) -> dict[str, Any]:
    return {
        "--seed": common.seed if train_seed is None else train_seed,
        "--model": common.model,
        "--data": data,
        "--out": out,
        "--monitor": trait,
        "--monitor-vector": vector_id,
        "--monitor-layer": common.layer,
        "--max-steps": common.max_steps,
        "--dtype": None if common.dtype == "auto" else common.dtype,
        "--device": None if common.device == "auto" else common.device,
    }


@dataclass
class PoolScores:
    """Per-sample scores of one screen: (method, layer) -> sample_id -> score (raw: the answer's
    projection), plus the base answers' projections (exact) for the noise analysis."""

    screen_run_id: str
    layer: int
    scores: dict[tuple[str, int], dict[str, float]]
    proj_base: dict[int, dict[str, float]]
    vector_id: str

    @property
    def layers(self) -> list[int]:
        return sorted({layer for _, layer in self.scores})

    def score_of(self, method: str, record: dict[str, Any], layer: int | None = None) -> float | None:
        from pvdata.samples.dataset import sample_id_of
        from pvdata.samples.records import parse_record

        prompt, answer = parse_record(record)
        return self.scores[(method, self.layer if layer is None else layer)].get(sample_id_of(prompt, answer))

    def mean(self, method: str, records: Sequence[dict[str, Any]], layer: int | None = None) -> float | None:
        """Mean over records (duplicates count, as the paper's mean over a training set); None when a
        sample was not scored (no honest dataset mean then)."""
        values = [self.score_of(method, r, layer) for r in records]
        if not values or any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None) / len(values)


def screen_pool(
    common: Common, trait: str, pool: Path, warehouse: str, out: Path, lm: Any, log: Log
) -> PoolScores:
    """Screen every sample of the pool file with all three methods at the experiment's layer (and the
    extra --screen-layers, for the separation analysis)."""
    from pvdata.pipelines.screen import DEFAULT_MAX_NEW_TOKENS, ScreenConfig, run_screen
    from pvdata.warehouse import Warehouse

    vector = common.vectors[trait]
    layers = sorted({common.layer, *common.screen_layers})
    cfg = ScreenConfig(
        dataset=str(pool),
        model=common.model,
        traits=[trait],
        vectors=[common.vector_specs[trait]],
        layers=layers,
        methods=list(METHODS),
        max_new_tokens=common.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        base_samples=common.base_samples,
        seed=common.seed,
        dtype=common.dtype,
        device=common.device,
    )
    result = run_screen(cfg, warehouse, out=str(out), log=log, lm=lm)
    columns = ["sample_id", "method", "layer", "score", "proj_train", "proj_base"]
    table = Warehouse(warehouse).read_run_table("screenings", result.run_id, columns)
    scores: dict[tuple[str, int], dict[str, float]] = {(m, layer): {} for m in METHODS for layer in layers}
    proj_base: dict[int, dict[str, float]] = {layer: {} for layer in layers}
    for sid, method, layer, score, proj, base in zip(
        *(table.column(c).to_pylist() for c in columns), strict=True
    ):
        if score is None:
            continue
        scores[(method, layer)][sid] = float(proj if method == "raw" else score)
        if method == "exact" and base is not None:
            proj_base[layer][sid] = float(base)
    return PoolScores(result.run_id, common.layer, scores, proj_base, vector.vector_id)


@dataclass
class Trained:
    train_run_id: str
    adapter: str | None
    shift: float | None
    judged_score: float | None = None
    evaluate_run_id: str | None = None


def finetune(
    common: Common,
    trait: str,
    data: Path,
    out: Path,
    warehouse: str,
    log: Log,
    train_seed: int | None = None,
) -> Trained:
    """LoRA-finetune on one dataset with the fixed budget; the shift at the experiment's layer.

    The adapter folder is named after the dataset's content too, so a dataset that changed between two
    runs of an experiment trains afresh instead of colliding with the old run's checkpoints, and so is
    the training budget (config file, --max-steps): another budget in the same --out trains in its
    own folder instead of refusing the other budget's checkpoints. The training seed is `--seed`
    unless `train_seed` says otherwise; another seed gets its own folder.
    """
    from pvdata.samples.readers import content_hash
    from pvdata.training.config import build_config
    from pvdata.training.data import file_sha256
    from pvdata.training.pipeline import run_train
    from pvdata.warehouse.ids import config_hash

    path = common.train_config_path()
    budget = {"train_config": file_sha256(path) if path else None, "max_steps": common.max_steps}
    name = f"{data.stem}-{content_hash(data)[:8]}-{config_hash(budget)[:6]}"
    adapter_dir = out / "adapters" / trait / name
    if train_seed is not None and train_seed != common.seed:
        adapter_dir = adapter_dir.with_name(f"{adapter_dir.name}-seed{train_seed}")

    cfg = build_config(
        common.train_config_path(),
        _train_overrides(common, str(data), trait, common.vector_specs[trait], str(adapter_dir), train_seed),
    )
    result = run_train(cfg, warehouse, log=log, progress=False)
    shift = result.stats.get("shift")
    trained = Trained(
        result.run_id,
        str(result.adapter) if result.adapter else None,
        None if shift is None else float(shift),
    )
    if common.judge != "none" and trained.adapter is not None:
        trained.judged_score, trained.evaluate_run_id = judged_score(
            common, trait, trained.adapter, warehouse, log
        )
    return trained


def judged_score(
    common: Common, trait: str, adapter: str, warehouse: str, log: Log
) -> tuple[float | None, str]:
    """The judged trait score of the finetuned model's answers to the trait's eval questions."""
    from pvdata.pipelines.evaluate import EvaluateConfig, run_evaluate

    cfg = EvaluateConfig(
        trait=trait,
        model=common.model,
        adapter=adapter,
        judge=common.judge,
        questions=common.eval_questions,
        n_per_question=common.eval_n_per_question,
        max_new_tokens=common.eval_max_new_tokens,
        seed=common.seed,
        dtype=common.dtype,
        device=common.device,
    )
    result = run_evaluate(cfg, warehouse, log=log)
    cell = result.cells[0] if result.cells else None
    return (None if cell is None else cell.trait_mean), result.run_id


def load_screen_model(common: Common) -> Any:
    from pvdata.models import load_model

    return load_model(common.model, dtype=common.dtype, device=common.device)
