"""Screening training data with persona vectors: per-sample scores, thresholds with reasons, output files.

    >>> batch = score_batch(lm, samples, [evil], layers=[15], methods=["exact", "raw"])  # pure batch step
    >>> decide([r["score"] for r in batch.scores], ThresholdSpec("percentile", 95), reference=ref_scores)

`pvdata.pipelines.screen.run_screen` runs the whole job into the warehouse; see docs/SCREENING.md.
"""

from pvdata.screening.output import FILES, OutputPaths, check_out_dir, write_atomic, write_outputs
from pvdata.screening.scoring import (
    METHODS,
    ScoredBatch,
    ScoreInput,
    check_methods,
    score_batch,
    scores_from_projections,
    targets,
)
from pvdata.screening.thresholds import (
    DEFAULT_PERCENTILE,
    Decision,
    Decisions,
    ThresholdSpec,
    decide,
    percentile_ranks,
    percentile_threshold,
)

__all__ = [
    "DEFAULT_PERCENTILE",
    "FILES",
    "METHODS",
    "Decision",
    "Decisions",
    "OutputPaths",
    "ScoreInput",
    "ScoredBatch",
    "ThresholdSpec",
    "check_methods",
    "check_out_dir",
    "decide",
    "percentile_ranks",
    "percentile_threshold",
    "score_batch",
    "scores_from_projections",
    "targets",
    "write_atomic",
    "write_outputs",
]
