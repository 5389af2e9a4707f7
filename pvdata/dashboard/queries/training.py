"""Queries of the Training page: train runs (steered or not), their curves, summaries and finetuning
shifts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from pvdata.dashboard.queries.sql import Con, _df, _json, has_column


def steering_of_config(config: Any) -> dict[str, Any] | None:
    """The steering a train run used, from its config: a `steering` key at the top or one level down
    (e.g. `config.steering`). None, false, {} or coef 0 mean unsteered; anything else is steered."""
    if not isinstance(config, dict):
        return None
    candidates = [config.get("steering")] + [
        v.get("steering") for v in config.values() if isinstance(v, dict) and "steering" in v
    ]
    for value in candidates:
        if isinstance(value, dict) and value:
            coef = value.get("coef")
            if isinstance(coef, int | float) and not isinstance(coef, bool) and coef == 0:
                continue
            return value
        if value is True:
            return {"mode": "on"}
    return None


def train_runs(con: Con) -> pd.DataFrame:
    """Runs with training metrics (newest first): steered or not (from the config), the steering, steps,
    and the experiment run that made it (its datasets' finetunes; None for a run of its own)."""
    sql = f"""
        SELECT t.run_id, any_value(r.model_id) AS model_id, any_value(r.finished_at) AS finished_at,
               any_value(r.config) AS config, count(*) FILTER (WHERE {_split(con)} = 'train') AS n_steps,
               max(t.step) AS last_step,
               any_value(t.trait) AS trait, any_value(t.vector_id) AS vector_id,
               (SELECT min(e.run_id) FROM runs AS e
                WHERE e.kind = 'experiment' AND list_contains(e.parent_run_ids, t.run_id)) AS experiment
        FROM train_metrics AS t LEFT JOIN runs AS r USING (run_id)
        GROUP BY t.run_id
        ORDER BY finished_at DESC NULLS LAST, t.run_id
    """
    df = _df(con, sql)
    steering = [steering_of_config(_json(c)) for c in df["config"]]
    df["steered"] = [s is not None for s in steering]
    df["steering"] = [json.dumps(s, sort_keys=True) if s is not None else "" for s in steering]
    return df.drop(columns=["config"])


def _split(con: Con) -> str:
    """train_metrics.split (train | eval) where the table has it, else every row counts as train."""
    return "coalesce(split, 'train')" if has_column(con, "train_metrics", "split") else "'train'"


def train_curves(con: Con, run_ids: Sequence[str]) -> pd.DataFrame:
    """run_id, split, step, epoch, loss, learning_rate, grad_norm, projection for the given runs."""
    sql = f"""
        SELECT run_id, {_split(con)} AS split, step, epoch, loss, learning_rate, grad_norm, projection, layer
        FROM train_metrics WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, split, step
    """
    return _df(con, sql, [list(run_ids)])


def train_summary(con: Con, run_ids: Sequence[str]) -> pd.DataFrame:
    """Per run, over its train steps: steps, final and lowest loss, final and mean projection (nulls
    left out); the last eval loss where the run evaluated; the monitored layer and the finetuning shift
    there (finetune_shifts), where the run recorded one."""
    sql = f"""
        WITH t AS (
            SELECT *, {_split(con)} AS split_ FROM train_metrics
            WHERE run_id IN (SELECT unnest(?::VARCHAR[]))
        ), a AS (
            SELECT run_id, count(*) FILTER (WHERE split_ = 'train') AS n_steps,
                   max(step) FILTER (WHERE split_ = 'train') AS last_step,
                   arg_max(loss, step) FILTER (WHERE split_ = 'train' AND loss IS NOT NULL) AS final_loss,
                   min(loss) FILTER (WHERE split_ = 'train') AS min_loss,
                   arg_max(projection, step) FILTER (WHERE split_ = 'train' AND projection IS NOT NULL)
                       AS final_projection,
                   avg(projection) FILTER (WHERE split_ = 'train') AS mean_projection,
                   count(*) FILTER (WHERE split_ = 'eval') AS n_evals,
                   arg_max(loss, step) FILTER (WHERE split_ = 'eval' AND loss IS NOT NULL)
                       AS final_eval_loss,
                   max(layer) AS monitor_layer
            FROM t GROUP BY run_id
        )
        SELECT a.*, s.shift AS shift_at_layer
        FROM a LEFT JOIN finetune_shifts AS s ON s.run_id = a.run_id AND s.layer = a.monitor_layer
        ORDER BY a.run_id
    """
    return _df(con, sql, [list(run_ids)])


def finetune_shifts(con: Con, run_ids: Sequence[str]) -> pd.DataFrame:
    """The finetuning shift of the given train runs, one row per run and layer of the monitored vector:
    base_proj and finetuned_proj (mean prompt_last projections over the trait's eval prompts) and
    shift = finetuned_proj - base_proj."""
    sql = """
        SELECT run_id, trait, vector_id, layer, base_proj, finetuned_proj, shift, n_prompts, model_id,
               adapter
        FROM finetune_shifts WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, layer
    """
    return _df(con, sql, [list(run_ids)])
