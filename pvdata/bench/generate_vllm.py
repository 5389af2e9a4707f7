"""`pvdata bench generate --vllm`: the vLLM backend against the HF backend, same prompts, same run.

This is the measurement behind `--backend auto` (which picks vLLM only on a GPU): both backends answer
the same chat prompts through their public `generate`, greedy or seeded, and the bench prints the
seconds of each (best of --repeats, alternating which goes first), their ratio, the engine's start-up
time (paid once per process, kept out of the ratio) and how many answers are the same (text, token
count and finish reason). vLLM is imported only here, only with --vllm.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

VLLM_ENGINE_MAX_LEN = 4096  # prompts here are < 300 tokens; a small context keeps the KV cache small


def _texts(results: Sequence[Any]) -> list[tuple[str, int | None, str]]:
    return [(r.text, r.n_tokens, r.finish_reason) for r in results]


def compare_vllm(
    lm: Any, model: str, messages: Sequence[Any], params: Any, args: Any, engine: Any = None
) -> None:
    """Print the vLLM vs HF section. Answers are counted, not required to match: the two run different
    attention kernels, so even in float32 a near-tie late in a long answer can go either way (the exact
    agreement on short answers is tested in tests/test_vllm_backend.py). `engine`: an already built
    VLLMBackend (its start-up is then not measured)."""
    import torch

    from pvdata.activations.capture import default_max_length
    from pvdata.generation.base import GenerationRequest
    from pvdata.generation.hf import HFBackend
    from pvdata.generation.hf_decode import resolve_decode
    from pvdata.generation.vllm_offline import VLLMBackend

    dtype = str(lm.dtype).replace("torch.", "")
    requests = [GenerationRequest(tuple(dict(m) for m in p)) for p in messages]
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    if engine is None:
        max_len = min(VLLM_ENGINE_MAX_LEN, default_max_length(lm.model))
        engine = VLLMBackend(model, dtype=dtype, max_model_len=max_len, seed=args.seed)
    startup = time.perf_counter() - t0
    torch.set_num_threads(threads)  # vLLM's CPU engine lowers torch's threads; both sides get the same
    hf = HFBackend(lm, token_budget=args.token_budget)
    sides: dict[str, Any] = {"vllm": engine, "hf": hf}
    for backend in sides.values():  # warm-up: kernels, allocator, vLLM's first schedule
        backend.generate(requests[:2], type(params)(max_new_tokens=4))
    best = {name: float("inf") for name in sides}
    out: dict[str, list[Any]] = {}
    for repeat in range(max(1, args.repeats)):
        for name in ("vllm", "hf") if repeat % 2 == 0 else ("hf", "vllm"):
            t0 = time.perf_counter()
            out[name] = sides[name].generate(requests, params)
            best[name] = min(best[name], time.perf_counter() - t0)
    same = sum(a == b for a, b in zip(_texts(out["vllm"]), _texts(out["hf"]), strict=True))
    for name, what in (
        ("vllm", "paged, continuous batching"),
        ("hf", f"HF backend, decode {resolve_decode(hf.decode)}"),
    ):
        tokens = sum(r.n_tokens or 0 for r in out[name])
        print(
            f"backend {name} ({what}): {best[name]:.2f} s  {len(requests) / best[name]:8.2f} prompts/s  "
            f"{tokens / best[name]:9.1f} generated tokens/s"
        )
    # sampled answers are not comparable: vLLM draws from its own seeded generator per request
    agree = f"{same}/{len(requests)}" if params.greedy else "not compared (sampled: each draws its own)"
    print(
        f"vllm engine start-up: {startup:.1f} s (once per process, not in the ratio)  torch threads: "
        f"{torch.get_num_threads()}  backend hf/vllm time ratio: {best['hf'] / best['vllm']:.2f}  "
        f"same answers vllm/hf: {agree}"
    )
