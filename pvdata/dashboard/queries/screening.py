"""Queries of the Screening page: screen runs and groups, thresholds, score histograms, ranked samples,
one sample's detail, and the JSONL export of a selection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from pvdata.dashboard.queries.sql import Con, _df, _json, _standard, has_column

# screening group: (dataset_id, trait, vector_id, layer, method); any part may be None
Group = tuple[str | None, str | None, str | None, int | None, str | None]


def screen_runs(con: Con) -> pd.DataFrame:
    """Runs that wrote screenings (newest first): datasets, traits, samples and how many were flagged."""
    sql = """
        SELECT s.run_id, any_value(r.model_id) AS model_id, any_value(r.finished_at) AS finished_at,
               array_to_string(list(DISTINCT s.dataset_id ORDER BY s.dataset_id), ',') AS datasets,
               array_to_string(list(DISTINCT s.trait ORDER BY s.trait), ',') AS traits,
               count(DISTINCT s.sample_id) AS n_samples,
               count(DISTINCT s.sample_id) FILTER (WHERE s.flagged) AS n_flagged
        FROM screenings AS s LEFT JOIN runs AS r USING (run_id)
        GROUP BY s.run_id
        ORDER BY finished_at DESC NULLS LAST, s.run_id
    """
    return _df(con, sql)


def screen_run_of_sample(con: Con, sample_id: str) -> str | None:
    """The newest screen run that scored a sample (for a deep link that names only the sample)."""
    row = con.execute(
        "SELECT s.run_id FROM screenings AS s LEFT JOIN runs AS r USING (run_id) WHERE s.sample_id = ? "
        "ORDER BY r.finished_at DESC NULLS LAST, s.run_id LIMIT 1",
        [sample_id],
    ).fetchone()
    return None if row is None else str(row[0])


def screening_groups(con: Con, run_id: str) -> pd.DataFrame:
    """screening_summary.sql for one run: one row per (dataset, trait, vector, layer, method)."""
    sql = f"SELECT * FROM ({_standard('screening_summary')}) AS s WHERE s.run_id = $1"
    return _df(con, sql, [run_id])


def group_of(row: dict[str, Any]) -> Group:
    """The (dataset_id, trait, vector_id, layer, method) of a screening_groups row, nulls as None."""

    def value(key: str) -> Any:
        v = row.get(key)
        return None if v is None or bool(pd.isna(v)) else v

    layer = value("layer")
    return (
        value("dataset_id"),
        value("trait"),
        value("vector_id"),
        None if layer is None else int(layer),
        value("method"),
    )


def _find_threshold(value: Any) -> float | None:
    """The first numeric `threshold` (or `score_threshold`) key in a nested config or stats object."""
    if isinstance(value, dict):
        for key in ("threshold", "score_threshold"):
            found = value.get(key)
            if isinstance(found, int | float) and not isinstance(found, bool):
                return float(found)
        for child in value.values():
            got = _find_threshold(child)
            if got is not None:
                return got
    return None


_GROUP_WHERE = """
    run_id = $1 AND dataset_id IS NOT DISTINCT FROM $2 AND trait IS NOT DISTINCT FROM $3
    AND vector_id IS NOT DISTINCT FROM $4 AND layer IS NOT DISTINCT FROM $5 AND method IS NOT DISTINCT FROM $6
"""


def screen_threshold(con: Con, run_id: str, group: Group) -> tuple[float | None, str]:
    """The score threshold of a screening and where it came from: the rows' `threshold` column, else a
    numeric `threshold` key in the run's stats or config, else the lowest score of a flagged sample
    ('inferred'), else (None, 'none')."""
    if has_column(con, "screenings", "threshold"):
        row = con.execute(
            f"SELECT max(threshold) FROM screenings WHERE {_GROUP_WHERE}", [run_id, *group]
        ).fetchone()
        if row is not None and row[0] is not None:
            basis = screen_basis(con, run_id, group)
            return float(row[0]), "screenings.threshold" + (f" ({basis})" if basis else "")
    row = con.execute("SELECT stats, config FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is not None:
        for text, source in ((row[0], "run stats"), (row[1], "run config")):
            found = _find_threshold(_json(text))
            if found is not None:
                return found, source
    low = con.execute(
        f"SELECT min(score) FROM screenings WHERE {_GROUP_WHERE} AND flagged", [run_id, *group]
    ).fetchone()
    if low is not None and low[0] is not None:
        return float(low[0]), "inferred (lowest flagged score)"
    return None, "none"


def screen_basis(con: Con, run_id: str, group: Group) -> str | None:
    """How `pvdata screen` set a group's threshold, in words ('top 3 of 12 scored samples', '95th
    percentile of the reference, n=500'): the matching entry of the run's stats `groups`."""
    row = con.execute("SELECT stats FROM runs WHERE run_id = ?", [run_id]).fetchone()
    stats = _json(row[0]) if row is not None else None
    groups = stats.get("groups") if isinstance(stats, dict) else None
    _, trait, vector_id, layer, method = group
    for g in groups if isinstance(groups, list) else []:
        if not isinstance(g, dict):
            continue
        same = (g.get("trait"), g.get("vector_id"), g.get("layer"), g.get("method")) == (
            trait,
            vector_id,
            layer,
            method,
        )
        if same and isinstance(g.get("basis"), str):
            return str(g["basis"])
    return None


def score_histogram(con: Con, run_id: str, group: Group, bins: int = 40) -> pd.DataFrame:
    """bin_start, bin_end, flagged, n: screening scores binned in SQL (so 200k samples stay cheap)."""
    sql = f"""
        WITH s AS (SELECT score, coalesce(flagged, false) AS flagged FROM screenings
                   WHERE {_GROUP_WHERE} AND score IS NOT NULL),
        r AS (SELECT min(score) AS lo, max(score) AS hi FROM s),
        w AS (SELECT lo, CASE WHEN hi > lo THEN (hi - lo) / $7 ELSE 1.0 END AS width FROM r)
        SELECT w.lo + b * w.width AS bin_start, w.lo + (b + 1) * w.width AS bin_end, flagged, count(*) AS n
        FROM (SELECT least(floor((s.score - w.lo) / w.width), $7 - 1)::INTEGER AS b, s.flagged
              FROM s, w) AS x, w
        GROUP BY ALL ORDER BY bin_start, flagged
    """
    return _df(con, sql, [run_id, *group, bins])


def screening_ranked(
    con: Con,
    run_id: str,
    group: Group,
    flagged_only: bool = True,
    verdict: str = "all",
    limit: int | None = 100,
) -> pd.DataFrame:
    """Samples of one screening ranked by score (rank 1 = highest over the whole group), with the latest
    review verdict; `verdict` is all | unreviewed | confirmed | false_positive."""
    where = ["($7 = false OR flagged)"]
    if verdict == "unreviewed":
        where.append("verdict IS NULL")
    elif verdict != "all":
        where.append("verdict = $8")
    sql = f"""
        WITH ranked AS (
            SELECT row_number() OVER (ORDER BY score DESC NULLS LAST, sample_id) AS rank, sample_id,
                   dataset_id, score, percentile, proj_train, proj_base, flagged, reason
            FROM screenings WHERE {_GROUP_WHERE}
        ), latest AS (
            SELECT sample_id, arg_max(verdict, "at") AS verdict, count(*) AS n_reviews
            FROM reviews GROUP BY sample_id
        )
        SELECT ranked.*, latest.verdict, coalesce(latest.n_reviews, 0) AS n_reviews
        FROM ranked LEFT JOIN latest USING (sample_id)
        WHERE {" AND ".join(where)}
        ORDER BY rank
        {f"LIMIT {int(limit)}" if limit else ""}
    """
    params: list[Any] = [run_id, *group, flagged_only]
    if verdict not in ("all", "unreviewed"):
        params.append(verdict)
    return _df(con, sql, params)


def sample_detail(con: Con, sample_id: str) -> dict[str, Any] | None:
    """A training sample: dataset_id, source, line, its messages (parsed) and, for a preference pair,
    the rejected answer."""
    row = con.execute(
        "SELECT sample_id, dataset_id, source, line, messages, rejected FROM samples WHERE sample_id = ? "
        "ORDER BY messages IS NULL, run_id LIMIT 1",
        [sample_id],
    ).fetchone()
    if row is None:
        return None
    messages = _json(row[4])
    return {
        "sample_id": row[0],
        "dataset_id": row[1],
        "source": row[2],
        "line": row[3],
        "messages": messages if isinstance(messages, list) else [],
        "rejected": row[5],
    }


def base_answers(con: Con, sample_id: str) -> pd.DataFrame:
    """The base model's own answers to a sample's prompt: generations with split dataset_base that
    belong to the sample, or that a screening of it compared with (`base_generation_id`: samples that
    share a prompt share one base answer)."""
    sql = """
        SELECT model_id, answer, n_tokens, finish_reason, run_id, generation_id FROM generations
        WHERE split = 'dataset_base' AND (
            sample_id = $1
            OR generation_id IN (SELECT base_generation_id FROM screenings WHERE sample_id = $1)
        )
        ORDER BY run_id, sample_index, generation_id
    """
    return _df(con, sql, [sample_id])


def sample_screenings(con: Con, sample_id: str) -> pd.DataFrame:
    """Every screening score of a sample (all runs, layers, methods)."""
    sql = """
        SELECT run_id, trait, layer, method, score, percentile, proj_train, proj_base, flagged, reason,
               vector_id
        FROM screenings WHERE sample_id = ? ORDER BY run_id, trait, layer, method
    """
    return _df(con, sql, [sample_id])


def sample_reviews(con: Con, sample_id: str) -> pd.DataFrame:
    """The review history of a sample, newest first."""
    return _df(
        con,
        'SELECT "at", verdict, reviewer, note, run_id FROM reviews WHERE sample_id = ? ORDER BY "at" DESC',
        [sample_id],
    )


def selection_records(con: Con, run_id: str, group: Group, sample_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The selected samples with their scores and messages, in rank order, for a JSONL export."""
    sql = f"""
        WITH ranked AS (
            SELECT row_number() OVER (ORDER BY score DESC NULLS LAST, sample_id) AS rank, *
            FROM screenings WHERE {_GROUP_WHERE}
        )
        SELECT r.rank, r.sample_id, r.dataset_id, r.trait, r.layer, r.method, r.score, r.percentile,
               r.proj_train, r.proj_base, r.flagged, r.reason, s.messages
        FROM ranked AS r
        LEFT JOIN (
            SELECT DISTINCT ON (sample_id) sample_id, messages FROM samples WHERE messages IS NOT NULL
        ) AS s USING (sample_id)
        WHERE r.sample_id IN (SELECT unnest($7::VARCHAR[]))
        ORDER BY r.rank
    """
    cur = con.execute(sql, [run_id, *group, list(sample_ids)])
    cols = [d[0] for d in cur.description or []]
    out = []
    for row in cur.fetchall():
        record = dict(zip(cols, row, strict=True))
        record["messages"] = _json(record["messages"])
        out.append(record)
    return out


def to_jsonl(records: Sequence[dict[str, Any]]) -> str:
    """One JSON object per line (numbers as numbers, NaN as null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        return v.item() if hasattr(v, "item") else v

    return "".join(
        json.dumps({k: clean(v) for k, v in r.items()}, ensure_ascii=False, default=str) + "\n"
        for r in records
    )
