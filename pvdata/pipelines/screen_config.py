"""`ScreenConfig`: what `pvdata screen` was asked to do, and the flag checks that need no file or model.

Apart from the stages (pvdata.pipelines.screen) so that specs, experiments and the CLI can build and
check a config without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pvdata.errors import ConfigError
from pvdata.executors.base import ExecutorConfig, executor_config

DEFAULT_MAX_NEW_TOKENS = 256


@dataclass
class ScreenConfig:
    """What `pvdata screen` was asked to do (the CLI flags, one field each)."""

    dataset: str
    model: str
    traits: list[str] = field(default_factory=list)  # default: the traits of the --vector files
    vectors: list[str] = field(default_factory=list)  # files or warehouse ids; default: latest per trait
    layers: list[int] = field(default_factory=list)  # default: per trait, see default_layer
    methods: list[str] = field(default_factory=lambda: ["exact"])
    turns: str = "last"  # assistant turns scored: last | all (pvdata.screening.turns)
    reference: str | None = None
    percentile: float | None = None
    threshold: float | None = None
    top_k: int | None = None
    backend: str = "auto"  # base answers for exact: auto | hf | vllm | openai:MODEL (resolve_backend)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    base_samples: int = 1  # exact: > 1 subtracts the mean projection of K sampled base answers
    seed: int = 0
    skip_invalid: bool = False
    format: str | None = None
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    system_column: str = "system"
    messages_column: str = "messages"
    hf_split: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    layers_path: str | None = None
    token_budget: int | None = None
    max_length: int | None = None  # longer samples are not scored (default: the model's context)
    chunk_size: int = 64
    compile: str | None = None  # torch.compile mode of the scored blocks; never part of a run's config
    executor: str = "local"  # local | ray (docs/SCALE.md); never part of a run's config
    ray_address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    worker_retries: int = 3

    def executor_config(self) -> ExecutorConfig:
        return executor_config(self)

    def columns(self) -> Any:
        from pvdata.samples import Columns

        return Columns(self.prompt_column, self.answer_column, self.system_column, self.messages_column)

    def threshold_spec(self) -> Any:
        from pvdata.screening.thresholds import ThresholdSpec

        return ThresholdSpec.from_flags(self.percentile, self.threshold, self.top_k)

    def check(self) -> None:
        """Flag-level checks that need no file, warehouse or model."""
        from pvdata.generation.backends import backend_kind
        from pvdata.models.compiled import check_compile_mode
        from pvdata.screening.scoring import check_methods
        from pvdata.screening.turns import check_turns

        check_methods(self.methods)
        check_turns(self.turns)
        self.threshold_spec()
        self.executor_config().check(self.device)
        backend_kind(self.backend)
        check_compile_mode(self.compile)
        if self.chunk_size < 1:
            raise ConfigError(f"--chunk-size {self.chunk_size} must be >= 1")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"--max-length {self.max_length} must be >= 1 (tokens of prompt + answer)")
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens {self.max_new_tokens} must be >= 1")
        if isinstance(self.base_samples, bool) or self.base_samples < 1:
            raise ConfigError(f"--base-samples {self.base_samples} must be >= 1 (1 = the greedy answer)")
        if not self.traits and not self.vectors:
            raise ConfigError("give --trait T (the warehouse's latest vector of T) or --vector FILE")
