"""Table schemas and file validation: the warehouse contract (DESIGN.md §3) as pyarrow schemas.

Every Parquet file pvdata writes carries its schema version, table name, run id and vector widths in the
file's key-value metadata. Readers check those stamps and the column names and types before SQL sees a
file, so a foreign, stale or corrupt file is an error that names the file, never a silent cast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from pvdata.errors import WarehouseError

if TYPE_CHECKING:
    from pvdata.warehouse.store import Store

SCHEMA_VERSION = 1

META_VERSION = b"pvdata.schema_version"
META_TABLE = b"pvdata.table"
META_RUN_ID = b"pvdata.run_id"
META_DIMS = b"pvdata.dims"  # JSON {column: H or null} for vector columns

STRING = pa.string()
JSON = pa.string()  # JSON text; DuckDB's ->> and json_extract work on it directly
I32 = pa.int32()
I64 = pa.int64()
F32 = pa.float32()
F64 = pa.float64()
BOOL = pa.bool_()
TS = pa.timestamp("us")  # naive, always UTC
VEC32 = pa.list_(pa.float32())
VEC16 = pa.list_(pa.float16())


def _f(name: str, typ: pa.DataType, required: bool = False) -> pa.Field:
    return pa.field(name, typ, nullable=not required)


@dataclass(frozen=True)
class TableSpec:
    """One warehouse table: its schema, which columns hold vectors or JSON, and what it is for."""

    name: str
    schema: pa.Schema
    doc: str
    vector_columns: tuple[str, ...] = ()
    json_columns: tuple[str, ...] = ()
    # other types a column may have on disk (activations.values may be float16 to halve the bytes)
    alt_types: dict[str, tuple[pa.DataType, ...]] = field(default_factory=dict)
    # Columns added to the table after schema version 1. A warehouse written by an older pvdata has files
    # without them, and those files stay valid: readers show the column as NULL for their rows, so
    # growing a table by a nullable column needs neither a new SCHEMA_VERSION nor a rewrite of old runs.
    # Writers always write the full current schema. Only nullable columns can be added.
    added: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for c in self.added:
            if c not in self.schema.names or not self.schema.field(c).nullable:
                raise ValueError(f"table {self.name!r}: added column {c!r} must be a nullable column")

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.schema if not f.nullable]

    def accepts(self, column: str, typ: pa.DataType) -> bool:
        return typ == self.schema.field(column).type or typ in self.alt_types.get(column, ())


RUN_KINDS = (
    "extract",
    "generate",
    "judge",
    "activations",
    "vectors",
    "evaluate",
    "monitor",
    "screen",
    "train",
    "import",
    "review",
    "bench",
    "experiment",
)
RUN_STATUSES = ("running", "succeeded", "failed")

_SPECS = [
    TableSpec(
        "runs",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("kind", STRING, True),
                _f("status", STRING, True),
                _f("config", JSON),
                _f("config_hash", STRING),
                _f("parent_run_ids", pa.list_(pa.string())),
                _f("model_id", STRING),
                _f("pvdata_version", STRING),
                _f("git_commit", STRING),
                _f("git_dirty", BOOL),
                _f("started_at", TS),
                _f("finished_at", TS),
                _f("stats", JSON),
                _f("error", STRING),
                _f("attempt", I32),
                _f("seq", I32, True),
                _f("updated_at", TS),
                _f("host", STRING),
                _f("pid", I64),
            ]
        ),
        "append-only run events: a 'running' row at start, a final row at the end; the view keeps the "
        "latest (highest seq) row per run_id",
        json_columns=("config", "stats"),
    ),
    TableSpec(
        "generations",
        pa.schema(
            [
                _f("generation_id", STRING, True),
                _f("run_id", STRING, True),
                _f("trait", STRING),
                _f("split", STRING),
                _f("polarity", STRING),
                _f("question_id", STRING),
                _f("question", STRING),
                _f("system_prompt", STRING),
                _f("prompt_text", STRING),
                _f("answer", STRING),
                _f("model_id", STRING),
                _f("adapter", STRING),
                _f("steering", JSON),
                _f("sample_index", I32),
                _f("seed", I64),
                _f("n_tokens", I32),
                _f("sample_id", STRING),
                _f("finish_reason", STRING),
                _f("instruction_index", I32),
            ]
        ),
        "model answers; split extract | eval | dataset_base, polarity pos | neg | none, steering JSON "
        "{mode, vector_id, layers, coef, positions} or null",
        json_columns=("steering",),
    ),
    TableSpec(
        "judgments",
        pa.schema(
            [
                _f("judgment_id", STRING, True),
                _f("run_id", STRING, True),
                _f("generation_id", STRING, True),
                _f("metric", STRING, True),
                _f("judge_model", STRING),
                _f("score", F64),
                _f("valid_mass", F64),
                _f("refusal", BOOL),
                _f("error", STRING),
            ]
        ),
        "judge scores per generation; metric is a trait name or 'coherence'; score null when invalid",
    ),
    TableSpec(
        "activations",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("source_id", STRING, True),
                _f("model_id", STRING),
                _f("layer", I32, True),
                _f("pooling", STRING, True),
                _f("values", VEC32, True),
            ]
        ),
        "pooled hidden states (prompt_avg | response_avg | prompt_last) for the requested layers only",
        vector_columns=("values",),
        alt_types={"values": (VEC16,)},
    ),
    TableSpec(
        "vectors",
        pa.schema(
            [
                _f("vector_id", STRING, True),
                _f("run_id", STRING, True),
                _f("trait", STRING),
                _f("trait_version", STRING),
                _f("model_id", STRING),
                _f("layer", I32, True),
                _f("pooling", STRING),
                _f("method", STRING),
                _f("n_pos", I32),
                _f("n_neg", I32),
                _f("norm", F64),
                _f("values", VEC32, True),
                _f("n_layers", I32),
                _f("provenance", JSON),
            ]
        ),
        "persona vectors, one row per layer",
        vector_columns=("values",),
        json_columns=("provenance",),
    ),
    TableSpec(
        "projections",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("source_id", STRING, True),
                _f("vector_id", STRING, True),
                _f("layer", I32, True),
                _f("kind", STRING, True),
                _f("value", F64),
            ]
        ),
        "projection of a generation's or sample's activation on a vector; kind proj | prompt_last_proj | "
        "cos_sim",
    ),
    TableSpec(
        "samples",
        pa.schema(
            [
                _f("sample_id", STRING, True),
                _f("run_id", STRING, True),
                _f("dataset_id", STRING),
                _f("source", STRING),
                _f("line", I64),
                _f("messages", JSON),
                _f("format", STRING),
                _f("n_copies", I32),
                _f("lines", JSON),
                _f("error", STRING),
                _f("raw_record", STRING),
                _f("rejected", STRING),
            ]
        ),
        "training samples, one row per distinct sample per dataset (sample_id: content hash of the "
        "messages; n_copies and lines of its identical records) and one per invalid record (error set); "
        "rejected: the rejected answer of a preference record, NULL otherwise",
        json_columns=("messages", "lines"),
        added=("rejected",),
    ),
    TableSpec(
        "screenings",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("dataset_id", STRING),
                _f("sample_id", STRING, True),
                _f("vector_id", STRING),
                _f("trait", STRING),
                _f("layer", I32),
                _f("method", STRING),
                _f("proj_train", F64),
                _f("proj_base", F64),
                _f("score", F64),
                _f("percentile", F64),
                _f("flagged", BOOL),
                _f("reason", STRING),
                _f("threshold", F64),
                _f("base_generation_id", STRING),
                _f("n_copies", I32),
            ]
        ),
        "per-sample screening decisions; method exact | prompt_last_approx | raw | preference",
    ),
    TableSpec(
        "train_metrics",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("step", I64, True),
                _f("epoch", F64),
                _f("loss", F64),
                _f("learning_rate", F64),
                _f("grad_norm", F64),
                _f("trait", STRING),
                _f("vector_id", STRING),
                _f("layer", I32),
                _f("projection", F64),
                _f("split", STRING),
                _f("n_tokens", I64),
                _f("n_samples", I32),
                _f("step_seconds", F64),
            ]
        ),
        "training curves, one row per optimizer step (split train) and per evaluation (split eval); "
        "projection: mean over the step's samples of the answer-token mean of h . v_hat at the monitored "
        "layer, read before any steering",
    ),
    TableSpec(
        "finetune_shifts",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("trait", STRING),
                _f("vector_id", STRING, True),
                _f("layer", I32, True),
                _f("shift", F64),
                _f("base_proj", F64),
                _f("finetuned_proj", F64),
                _f("n_prompts", I32),
                _f("adapter", STRING),
                _f("model_id", STRING),
            ]
        ),
        "finetuning shift per layer: (mean prompt_last of the finetuned model - of the base model) . v_hat "
        "over the trait's eval prompts",
    ),
    TableSpec(
        "experiment_points",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("experiment", STRING, True),  # shift_prediction | filter
                _f("trait", STRING, True),
                _f("dataset", STRING, True),  # name within the experiment, e.g. evil-f0.25
                _f("dataset_id", STRING),
                _f("kind", STRING),  # mix | subtle | unfiltered | filtered | random
                _f("fraction", F64),  # share of trait answers (mix), or of samples dropped (filter)
                _f("method", STRING),  # filter: the score that chose the drop (or "random")
                _f("seed", I32),
                _f("n_records", I32),
                _f("n_trait", I32),  # trait (or subtle) answers among the records
                _f("layer", I32),
                _f("vector_id", STRING),
                _f("projection_difference_exact", F64),
                _f("projection_difference_approx", F64),
                _f("raw_projection", F64),
                _f("shift", F64),
                _f("judged_score", F64),
                _f("screen_run_id", STRING),
                _f("train_run_id", STRING),
                _f("evaluate_run_id", STRING),
            ]
        ),
        "one dataset of a `pvdata experiment`: its composition, pre-finetune screening means and the "
        "post-finetune shift",
    ),
    TableSpec(
        "experiment_stats",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("experiment", STRING, True),
                _f("trait", STRING, True),  # a trait, or "all"
                _f("x", STRING, True),  # e.g. projection_difference_exact
                _f("y", STRING, True),  # e.g. shift
                _f("n_datasets", I32),
                _f("pearson", F64),
                _f("spearman", F64),
                _f("pearson_ci_lo", F64),
                _f("pearson_ci_hi", F64),
                _f("spearman_ci_lo", F64),
                _f("spearman_ci_hi", F64),
            ]
        ),
        "correlations between a pre-finetune screening mean and a post-finetune outcome, with "
        "bootstrap 95% intervals",
    ),
    TableSpec(
        "reviews",
        pa.schema(
            [
                _f("run_id", STRING, True),
                _f("sample_id", STRING, True),
                _f("dataset_id", STRING),
                _f("verdict", STRING),
                _f("note", STRING),
                _f("reviewer", STRING),
                _f("at", TS),
            ]
        ),
        "human review verdicts from the dashboard; appended, never updated",
    ),
    TableSpec(
        "judge_cache",
        pa.schema(
            [
                _f("judge_model", STRING, True),
                _f("prompt_hash", STRING, True),
                _f("score", F64),
                _f("valid_mass", F64),
                _f("refusal", BOOL),
                _f("top_logprobs", JSON),
                _f("created_at", TS),
                _f("run_id", STRING, True),
            ]
        ),
        "judge responses keyed by (judge_model, prompt_hash), so a rerun never pays twice",
        json_columns=("top_logprobs",),
    ),
]

TABLES: dict[str, TableSpec] = {s.name: s for s in _SPECS}


def get_spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise WarehouseError(f"unknown table {table!r}; tables: {', '.join(TABLES)}") from None


def empty_table(table: str) -> pa.Table:
    return get_spec(table).schema.empty_table()


def file_metadata(table: str, run_id: str, dims: dict[str, int | None]) -> dict[bytes, bytes]:
    return {
        META_VERSION: str(SCHEMA_VERSION).encode(),
        META_TABLE: table.encode(),
        META_RUN_ID: run_id.encode(),
        META_DIMS: json.dumps(dims, sort_keys=True).encode(),
    }


@dataclass(frozen=True)
class FileInfo:
    """What a reader needs to know about one validated file."""

    path: str
    table: str
    run_id: str
    num_rows: int
    dims: dict[str, int | None]
    # added columns (TableSpec.added) this file lacks: written by an older pvdata; readers fill NULL
    lacks: tuple[str, ...] = ()


def check_schema(actual: pa.Schema, spec: TableSpec, where: str) -> tuple[str, ...]:
    """Columns must match the table exactly: a missing, unknown or differently typed column is an error.

    Only a column in `spec.added` may be missing (the file predates it); returns those the file lacks."""
    names = set(actual.names)
    lacks = tuple(c for c in spec.added if c not in names)
    missing = [c for c in spec.columns if c not in names and c not in lacks]
    unknown = [c for c in actual.names if c not in spec.columns]
    if missing:
        raise WarehouseError(
            f"{where}: missing column(s) {', '.join(missing)} that table {spec.name!r} requires "
            f"(expected {_describe(spec, missing)})"
        )
    if unknown:
        raise WarehouseError(
            f"{where}: unknown column(s) {', '.join(unknown)} for table {spec.name!r}; its columns are "
            f"{', '.join(spec.columns)}"
        )
    for f in actual:
        if not spec.accepts(f.name, f.type):
            raise WarehouseError(
                f"{where}: column {f.name!r} has type {f.type}, table {spec.name!r} expects "
                f"{spec.schema.field(f.name).type}"
            )
    return lacks


def _describe(spec: TableSpec, cols: list[str]) -> str:
    return ", ".join(f"{c}: {spec.schema.field(c).type}" for c in cols)


_HOW_TO_FIX = "move it out of the warehouse's tables/ folder (pvdata writes only through its writer)"


def validate_file(
    path: str | os.PathLike[str], table: str | None = None, *, store: Store | None = None
) -> FileInfo:
    """Read one file's footer and check its stamps and columns; a WarehouseError names the file.

    `store` is the warehouse the file lies in when it is not a local file (path is then the filesystem's
    path of the file); a missing file raises FileNotFoundError."""
    remote = store is not None and not store.is_local
    p: PurePath = PurePosixPath(os.fspath(path)) if remote else Path(path)
    where = f"file {store.display(str(p)) if store is not None and remote else p}"
    try:
        meta = store.read_metadata(str(p)) if store is not None and remote else pq.read_metadata(p)
        schema = meta.schema.to_arrow_schema()
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise WarehouseError(f"{where} is not a readable Parquet file ({exc}); {_HOW_TO_FIX}") from None
    kv = meta.metadata or {}
    version = kv.get(META_VERSION)
    if version is None:
        raise WarehouseError(
            f"{where} has no pvdata schema version stamp (metadata key {META_VERSION.decode()}); "
            f"it was not written by pvdata: {_HOW_TO_FIX}"
        )
    if version != str(SCHEMA_VERSION).encode():
        raise WarehouseError(
            f"{where} has schema version {version.decode(errors='replace')}, this pvdata reads version "
            f"{SCHEMA_VERSION}; rewrite the run with this pvdata or use the pvdata version that wrote it"
        )
    file_table = kv.get(META_TABLE, b"").decode(errors="replace")
    expected_table = table if table is not None else file_table
    if file_table != expected_table:
        raise WarehouseError(f"{where} belongs to table {file_table!r}, found in the folder of {table!r}")
    spec = get_spec(expected_table)
    lacks = check_schema(schema, spec, where)
    run_id = kv.get(META_RUN_ID, b"").decode(errors="replace")
    folder = p.parent.name
    if folder.startswith("run_id=") and folder != f"run_id={run_id}":
        raise WarehouseError(f"{where} was written by run {run_id!r} but lies in folder {folder!r}")
    try:
        dims = json.loads(kv.get(META_DIMS, b"{}"))
    except ValueError:
        raise WarehouseError(f"{where} has unreadable {META_DIMS.decode()} metadata") from None
    return FileInfo(str(p), expected_table, run_id, meta.num_rows, dims, lacks)
