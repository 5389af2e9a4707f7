"""`make_judge(spec)`: picks a judge by spec string; apart from base so the backends can import base.

The backends (openai_judge, hf_judge) import base's types; only this module imports them, and only
when a spec names them, so importing pvdata.judge imports neither torch nor openai.
"""

from __future__ import annotations

from pvdata.errors import ConfigError
from pvdata.judge.base import Judge, NoneJudge, ScriptedJudge

SPEC_HELP = (
    "openai:<model> (an OpenAI-compatible API; OPENAI_API_KEY, OPENAI_BASE_URL), hf:<model> (a local "
    "transformers model or alias, e.g. hf:smollm2-135m), none (skip judging: null scores), scripted "
    "(deterministic test scores)"
)


def make_judge(
    spec: str,
    *,
    concurrency: int = 64,
    timeout: float | None = None,
    max_retries: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> Judge:
    """A judge from a spec string: openai:<model>, hf:<model>, none, scripted (see SPEC_HELP)."""
    text = (spec or "").strip()
    kind, sep, model = text.partition(":")
    model = model.strip()
    if kind == "none" and not sep:
        return NoneJudge()
    if kind == "scripted":
        if sep and model:
            try:
                constant = float(model)
            except ValueError:
                raise ConfigError(
                    f"judge spec {spec!r}: scripted takes no argument or a constant score (scripted:80)"
                ) from None
            return ScriptedJudge(lambda _p: constant, name=f"scripted:{model}", cacheable=True)
        return ScriptedJudge(name="scripted", cacheable=True)
    if kind == "openai" and model:
        from pvdata.judge.openai_judge import OpenAIJudge
        from pvdata.remote.client import DEFAULT_TIMEOUT
        from pvdata.remote.retry import RetryPolicy

        policy = RetryPolicy() if max_retries is None else RetryPolicy(max_retries=max_retries)
        return OpenAIJudge(
            model,
            concurrency=concurrency,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            policy=policy,
        )
    if kind == "hf" and model:
        from pvdata.judge.hf_judge import HFJudge

        return HFJudge(model, device=device, dtype=dtype)
    raise ConfigError(f"judge spec {spec!r} is not valid; use one of: {SPEC_HELP}")
