"""LLM judges: logprob-weighted 0..100 scores with retries, a warehouse cache, and exact local judges.

    >>> judge = make_judge("openai:gpt-4.1-mini")      # or hf:smollm2-135m, none, scripted
    >>> results = judge_prompts(judge, [render(COHERENCE, question, answer)])

Importing this package imports neither torch nor openai; the backends import them when used.
See docs/JUDGING.md.
"""

from pvdata.judge.base import (
    Judge,
    JudgeFatalError,
    NoneJudge,
    ScriptedJudge,
    hash_score,
    judge_prompts,
    run_sync,
)
from pvdata.judge.cache import CachedJudge, JudgeCache, judge_with_cache, prompt_hash
from pvdata.judge.factory import SPEC_HELP, make_judge
from pvdata.judge.rubrics import COHERENCE, render, rubric_hash
from pvdata.judge.score import (
    MIN_VALID_MASS,
    JudgeResult,
    aggregate,
    aggregate_number_probs,
    is_refusal_token,
    parse_score_token,
)

__all__ = [
    "COHERENCE",
    "MIN_VALID_MASS",
    "SPEC_HELP",
    "CachedJudge",
    "Judge",
    "JudgeCache",
    "JudgeFatalError",
    "JudgeResult",
    "NoneJudge",
    "ScriptedJudge",
    "aggregate",
    "aggregate_number_probs",
    "hash_score",
    "is_refusal_token",
    "judge_prompts",
    "judge_with_cache",
    "make_judge",
    "parse_score_token",
    "prompt_hash",
    "render",
    "rubric_hash",
    "run_sync",
]
