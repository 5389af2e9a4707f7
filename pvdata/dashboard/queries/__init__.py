"""The dashboard's queries: each takes a DuckDB connection from `pvdata.warehouse.connect` (or a cursor
of one) and returns a pandas DataFrame, a dict, or a plain value. They only read; Streamlit never
appears here, so every number a page shows can be checked without it.

The standard analyses (warehouse/queries/*.sql) are reused as subqueries and filtered here, so the
dashboard and `pvdata sql --query-name ...` agree.

One module per page (runs, vectors, steering, projection, screening, training; what they share is in
`sql`); this package re-exports every query, so `queries.<name>` is how the app and the tests call them.
"""

from __future__ import annotations

from pvdata.dashboard.queries.projection import (
    projection_correlations,
    projection_points,
    projection_runs,
)
from pvdata.dashboard.queries.runs import (
    WarehouseState,
    lineage_dot,
    lineage_edges,
    run_detail,
    run_lineage,
    run_status_counts,
    run_table_rows,
    runs_overview,
    table_counts,
    warehouse_state,
)
from pvdata.dashboard.queries.screening import (
    Group,
    base_answers,
    group_of,
    sample_detail,
    sample_reviews,
    sample_screenings,
    score_histogram,
    screen_basis,
    screen_run_of_sample,
    screen_runs,
    screen_threshold,
    screening_groups,
    screening_ranked,
    selection_records,
    to_jsonl,
)
from pvdata.dashboard.queries.sql import (
    Con,
    has_column,
)
from pvdata.dashboard.queries.steering import (
    best_cell,
    steering_grid,
    steering_runs,
)
from pvdata.dashboard.queries.training import (
    finetune_shifts,
    steering_of_config,
    train_curves,
    train_runs,
    train_summary,
)
from pvdata.dashboard.queries.vectors import (
    vector_cosines,
    vector_layers,
    vector_models,
    vector_norms,
    vector_poolings,
    vectors_overview,
)

__all__ = [
    "Con",
    "Group",
    "WarehouseState",
    "base_answers",
    "best_cell",
    "finetune_shifts",
    "group_of",
    "has_column",
    "lineage_dot",
    "lineage_edges",
    "projection_correlations",
    "projection_points",
    "projection_runs",
    "run_detail",
    "run_lineage",
    "run_status_counts",
    "run_table_rows",
    "runs_overview",
    "sample_detail",
    "sample_reviews",
    "sample_screenings",
    "score_histogram",
    "screen_basis",
    "screen_run_of_sample",
    "screen_runs",
    "screen_threshold",
    "screening_groups",
    "screening_ranked",
    "selection_records",
    "steering_grid",
    "steering_of_config",
    "steering_runs",
    "table_counts",
    "to_jsonl",
    "train_curves",
    "train_runs",
    "train_summary",
    "vector_cosines",
    "vector_layers",
    "vector_models",
    "vector_norms",
    "vector_poolings",
    "vectors_overview",
    "warehouse_state",
]
