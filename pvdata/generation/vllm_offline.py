"""Offline vLLM generation (the `vllm` extra), with LoRA and steering through forward hooks.

vLLM is imported only when a backend is built. Prompts are rendered with pvdata's chat template and
passed as token ids, so vLLM sees exactly the tokens the HF backend sees. Each (prompt, sample) is its
own vLLM request with n=1 and a seed derived from (seed, prompt tokens, sample_index): vLLM's seeded
sampling draws per request, so a sample does not depend on its batch-mates.

Steering. The hooks run inside vLLM's worker (`LLM.apply_model` ships the installer there, by
reference to this module, so pvdata must be importable in the worker). Two things differ from HF:

- A vLLM decoder layer returns `(hidden, residual)`, and the residual stream after the layer is their
  SUM (the next layer's fused add-and-norm computes it). The hook adds its change to `hidden` only:
  "add" adds coef * v; "ablate" computes the projection on hidden + residual and subtracts it from
  `hidden`, which ablates the sum exactly. Touching both would apply the change twice.
- All requests of a step are flattened into one [tokens, H] tensor. Positions come from the attention
  metadata of the step (`query_start_loc`): "all" = every real token; "prompt" = tokens of requests
  whose query in this step is longer than one token (prefill); "response" = the last token of each
  request in the step. Padding rows past `num_actual_tokens` are never steered. A prompt that vLLM
  splits into several prefill chunks (longer than max_num_batched_tokens) gets "response" steering
  at the end of each chunk; HF steers the last prompt token only.

Hooks need eager execution: CUDA graphs replay recorded kernels and torch.compile traces the model
once, and neither calls Python hooks added afterwards. A steered backend therefore always builds its
engine with `enforce_eager=True`, and disables prefix caching, since KV computed under one steering
setting must not be reused under another.
"""

from __future__ import annotations

import copy
import functools
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pvdata.errors import ConfigError, MissingExtraError, ModelError
from pvdata.generation.base import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    sample_seed,
)

__all__ = ["LORA_RANKS", "VLLMBackend", "import_vllm"]

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted max_lora_rank values
_LAYER_PATHS = ("model.layers", "language_model.model.layers", "model.language_model.layers", "layers")

# Hook handles registered inside this process by _install_hooks, keyed by install token. In a
# multiprocess engine this dict lives in the worker, where apply_model runs the installer.
_HANDLES: dict[str, list[Any]] = {}


def import_vllm() -> Any:
    """The vllm module, or MissingExtraError naming the extra."""
    try:
        import vllm
    except ImportError as exc:
        raise MissingExtraError("vllm", "vllm") from exc
    return vllm


# -- inside the worker ----------------------------------------------------------------------------------


def _find_blocks(model: Any) -> Any:
    import torch

    for path in _LAYER_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and len(obj) > 0:
            return obj
    raise RuntimeError(
        f"pvdata steering: no decoder layer list found on vLLM model {type(model).__name__} "
        f"(looked for {', '.join(_LAYER_PATHS)})"
    )


def _step_layout() -> tuple[Any, int | None]:
    """(query_start_loc, num_actual_tokens) of the running step, or (None, None) when unknown."""
    try:
        from vllm.forward_context import get_forward_context, is_forward_context_available
    except ImportError:
        return None, None
    if not is_forward_context_available():
        return None, None
    meta = get_forward_context().attn_metadata
    if isinstance(meta, list):  # micro-batched steps: not supported, treated as unknown
        return None, None
    values = meta.values() if isinstance(meta, dict) else [meta]
    for item in values:
        qsl = getattr(item, "query_start_loc", None)
        if qsl is not None:
            return qsl, getattr(item, "num_actual_tokens", None)
    return None, None


@dataclass
class _VllmHook:
    """Forward hook of one vLLM decoder layer (see the module docstring for the residual rule)."""

    mode: str
    positions: str
    row: Any  # add: coef * v[l]; ablate: unit v_hat[l] (float32, CPU)

    def _selection(self, n_tokens: int, device: Any) -> Any:
        import torch

        qsl, actual = _step_layout()
        if qsl is None:
            if self.positions != "all":
                raise RuntimeError(
                    f"pvdata steering positions {self.positions!r} need vLLM's per-step attention "
                    "metadata (query_start_loc), which this vLLM version does not expose: steering with "
                    "these positions is unavailable for this vLLM version; use positions 'all' or the hf "
                    "backend"
                )
            return None
        qsl = qsl.to(device=device, dtype=torch.long)
        real = int(actual) if actual is not None else int(qsl[-1])
        sel = torch.zeros(n_tokens, dtype=torch.bool, device=device)
        if self.positions == "all":
            sel[: min(real, n_tokens)] = True
        elif self.positions == "response":
            last = qsl[1:] - 1
            sel[last[(last >= 0) & (last < n_tokens)]] = True
        else:  # prompt: requests whose query in this step is longer than one token
            lens = qsl[1:] - qsl[:-1]
            per_token = torch.repeat_interleave(lens > 1, lens)
            k = min(per_token.numel(), n_tokens)
            sel[:k] = per_token[:k]
        return sel.unsqueeze(-1)

    def __call__(self, module: Any, args: Any, output: Any) -> Any:
        import torch

        if isinstance(output, torch.Tensor):
            hidden, residual, rest, as_tuple = output, None, (), False
        elif isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            hidden = output[0]
            residual = output[1] if len(output) > 1 and isinstance(output[1], torch.Tensor) else None
            rest, as_tuple = output[1:], True
        else:
            raise RuntimeError(f"pvdata steering: unexpected vLLM layer output {type(output).__name__}")
        if hidden.shape[-1] != self.row.shape[-1]:
            raise RuntimeError(
                f"pvdata steering: vector width {self.row.shape[-1]} != hidden size {hidden.shape[-1]}"
            )
        flat = hidden.reshape(-1, hidden.shape[-1])
        sel = self._selection(flat.shape[0], flat.device)
        work = torch.promote_types(flat.dtype, torch.float32)
        vec = self.row.to(device=flat.device, dtype=work)
        if self.mode == "add":
            delta = vec.expand_as(flat)
        else:
            stream = flat.to(work)
            if residual is not None:
                stream = stream + residual.reshape(flat.shape).to(work)
            delta = -(stream @ vec).unsqueeze(-1) * vec
        if sel is not None:
            delta = torch.where(sel, delta, torch.zeros((), dtype=work, device=flat.device))
        new = (flat.to(work) + delta).to(flat.dtype).reshape(hidden.shape)
        return (new, *rest) if as_tuple else new


def _install_hooks(model: Any, *, token: str, rows: dict[int, Any], mode: str, positions: str) -> int:
    """Register one hook per steered layer; returns the number of decoder layers found."""
    blocks = _find_blocks(model)
    handles = [
        blocks[layer - 1].register_forward_hook(_VllmHook(mode, positions, row))
        for layer, row in rows.items()
    ]
    _HANDLES.setdefault(token, []).extend(handles)
    return len(blocks)


def _count_layers(model: Any) -> int:
    return len(_find_blocks(model))


def _remove_hooks(model: Any, *, token: str) -> int:
    handles = _HANDLES.pop(token, [])
    for handle in handles:
        handle.remove()
    return len(handles)


# -- the backend ------------------------------------------------------------------------------------------


def _lora_rank(adapter: str) -> int:
    import json
    from pathlib import Path

    config = Path(adapter) / "adapter_config.json"
    try:
        rank = int(json.loads(config.read_text()).get("r", 16))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the LoRA rank from {config}: {exc}") from exc
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ModelError(f"LoRA rank {rank} in {config} is above vLLM's maximum {LORA_RANKS[-1]}")


class VLLMBackend:
    """vLLM's offline engine: continuous batching, LoRA via LoRARequest, optional steering hooks.

    `llm_kwargs` go to `vllm.LLM` (e.g. max_model_len, gpu_memory_utilization, tensor_parallel_size).
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        dtype: str = "auto",
        steering: Any = None,
        vector: Any = None,
        enforce_eager: bool | None = None,
        steerable: bool | None = None,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> None:
        from pvdata.models.loading import prepare_tokenizer, resolve_model_source

        vllm = import_vllm()
        from transformers import AutoTokenizer

        source, implied_adapter = resolve_model_source(model)
        self.model_id = model
        self.adapter = adapter or implied_adapter
        self.steering = steering
        self.vector = vector
        if steering is not None and vector is None:
            raise ConfigError("a steering spec needs the vector to steer with (--vector FILE)")
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(source))
        self.steerable = steering is not None if steerable is None else steerable
        if steering is not None and not self.steerable:
            raise ConfigError("a steering spec was given with steerable=False")
        if self.steerable:
            if enforce_eager is False:
                raise ConfigError(
                    "steering with vLLM needs enforce_eager=True: CUDA graphs and torch.compile skip the "
                    "Python hooks that steer"
                )
            enforce_eager = True
            llm_kwargs.setdefault("enable_prefix_caching", False)
            # a multiprocess engine receives the hook installer by pickle (local IPC to its own worker)
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        if self.adapter:
            llm_kwargs.setdefault("enable_lora", True)
            llm_kwargs.setdefault("max_lora_rank", _lora_rank(self.adapter))
            llm_kwargs.setdefault("max_loras", 1)
        self.llm = vllm.LLM(
            model=source,
            tokenizer=source,
            dtype=dtype,
            seed=seed,
            enforce_eager=bool(enforce_eager),
            **llm_kwargs,
        )
        self._lora: Any = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("pvdata-adapter", 1, str(self.adapter))
        if steering is not None:
            self._check_steering()

    # -- steering -------------------------------------------------------------------------------------------

    def steered(self, steering: Any, vector: Any) -> VLLMBackend:
        """The same engine with another steering setting (None: unsteered); needs steerable=True."""
        if steering is not None and not self.steerable:
            raise ConfigError(
                "this vLLM engine was built without steering support; build it with steerable=True "
                "(eager mode, no prefix caching) to steer"
            )
        other = copy.copy(self)
        other.steering, other.vector = steering, vector
        if steering is not None:
            other._check_steering()
        return other

    def _steering_rows(self, n_layers: int) -> dict[int, Any]:
        from pvdata.steering.hooks import _unit, _vector_rows
        from pvdata.steering.spec import steering_row

        rows, vector_id = _vector_rows(self.vector)
        built = getattr(self.vector, "layers", ())
        spec = self.steering
        if spec.vector_id is None and vector_id is not None:
            from dataclasses import replace

            self.steering = spec = replace(spec, vector_id=vector_id)
        if rows.shape[0] != n_layers + 1:
            from pvdata.errors import VectorError

            raise VectorError(
                f"steering vector has {rows.shape[0]} rows but the vLLM model has {n_layers} decoder layers "
                f"(a vector needs L+1 = {n_layers + 1} rows): was it extracted from another model?"
            )
        out: dict[int, Any] = {}
        for layer in spec.layers:
            if not 1 <= layer <= n_layers:
                raise ModelError(f"steering layer {layer} is out of range: valid layers are 1..{n_layers}")
            row = steering_row(rows, layer, spec, built)
            out[layer] = spec.coef_for(layer) * row if spec.mode == "add" else _unit(row, layer)
        return out

    def _apply(self, fn: Any) -> list[Any]:
        apply_model = getattr(self.llm, "apply_model", None)
        if apply_model is None:
            raise ModelError(
                "steering is unavailable for this vLLM version: vllm.LLM has no apply_model() to reach the "
                "model inside its worker; use the hf backend, or a vLLM release with LLM.apply_model"
            )
        try:
            return list(apply_model(fn))
        except Exception as exc:
            raise ModelError(
                f"steering is unavailable for this vLLM version: running a function on the model inside "
                f"vLLM's worker failed ({type(exc).__name__}: {exc}); use the hf backend"
            ) from exc

    def _check_steering(self) -> None:
        counts = self._apply(_count_layers)
        self._steering_rows(int(counts[0]))  # validates shape and layers before any generation

    def _install(self) -> str:
        n_layers = int(self._apply(_count_layers)[0])
        rows = self._steering_rows(n_layers)
        token = uuid.uuid4().hex
        self._apply(
            functools.partial(
                _install_hooks,
                token=token,
                rows=rows,
                mode=self.steering.mode,
                positions=self.steering.positions,
            )
        )
        return token

    def _uninstall(self, token: str) -> None:
        self._apply(functools.partial(_remove_hooks, token=token))

    # -- generation -----------------------------------------------------------------------------------------

    def render_prompt(self, request: GenerationRequest) -> str:
        from pvdata.chat import render_prompt

        return render_prompt(self.tokenizer, request.messages)

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[GenerationResult]:
        from vllm import SamplingParams as VllmSamplingParams

        from pvdata.chat import encode_prompt
        from pvdata.generation.hf import stop_token_ids

        if not requests:
            return []
        stops = stop_token_ids(self.tokenizer)
        encoded = [encode_prompt(self.tokenizer, r.messages) for r in requests]
        row_samples = 1 if params.greedy else params.n
        jobs = [(i, s) for i in range(len(requests)) for s in range(row_samples)]
        prompts: list[Any] = [{"prompt_token_ids": encoded[i]} for i, _ in jobs]
        sampling = [
            VllmSamplingParams(
                n=1,
                temperature=params.temp,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                min_tokens=1,
                seed=None if params.greedy else sample_seed(params.seed, encoded[i], s),
                stop_token_ids=stops,
                skip_special_tokens=True,
            )
            for i, s in jobs
        ]
        token = self._install() if self.steering is not None else None
        try:
            outputs = self.llm.generate(prompts, sampling, use_tqdm=False, lora_request=self._lora)
        except Exception as exc:
            if token is None:
                raise
            raise ModelError(f"steered vLLM generation failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if token is not None:
                self._uninstall(token)
        by_job: dict[tuple[int, int], GenerationResult] = {}
        for (i, s), out in zip(jobs, outputs, strict=True):
            comp = out.outputs[0]
            reason: FinishReason = (
                "stop"
                if comp.finish_reason == "stop"
                else "length"
                if comp.finish_reason == "length"
                else "error"
            )
            by_job[(i, s)] = GenerationResult(
                request_index=i,
                sample_index=s,
                text=comp.text,
                n_tokens=len(comp.token_ids),
                finish_reason=reason,
                backend=self.name,
                request_id=requests[i].request_id,
                error=None if reason != "error" else f"vLLM finished the request with {comp.finish_reason!r}",
            )
        results: list[GenerationResult] = []
        for i in range(len(requests)):
            for s in range(params.n):
                base = by_job[(i, s if row_samples > 1 else 0)]
                results.append(base if base.sample_index == s else _with_sample(base, s))
        return results


def _with_sample(result: GenerationResult, sample_index: int) -> GenerationResult:
    from dataclasses import replace

    return replace(result, sample_index=sample_index)
