"""TableWriter: the one way pipelines persist rows.

Rows are buffered and committed as one Parquet file every `chunk_rows` rows, `chunk_bytes` bytes or
`chunk_seconds` seconds (checked on each write) and on close. A commit is a rename (locally) or one
upload (object stores), so each file is all-or-nothing. The rows of one `write` call always land in the
same file: write all rows of a work item in one call and a crash can never leave half an item behind.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pvdata.errors import WarehouseError
from pvdata.warehouse.files import StoreLike, next_seq, part_name, run_dir, write_atomic
from pvdata.warehouse.schema import VEC16, TableSpec, file_metadata, get_spec
from pvdata.warehouse.store import open_store

Rows: TypeAlias = Mapping[str, Any] | Iterable[Mapping[str, Any]] | pa.Table | pa.RecordBatch

_PY_BATCH = 2048  # dict rows are turned into Arrow in batches of this size


@dataclass(frozen=True)
class Commit:
    """One committed file, passed to `on_commit` (progress bars, tests); path as its filesystem spells it."""

    path: str
    rows: int
    total_rows: int


class TableWriter:
    """Buffer rows for one (table, run) and commit them atomically in chunks."""

    def __init__(
        self,
        root: StoreLike,
        table: str,
        run_id: str,
        *,
        chunk_rows: int = 100_000,
        chunk_seconds: float = 60.0,
        chunk_bytes: int = 128 << 20,
        vector_dtype: str = "float32",
        compression: str = "zstd",
        fsync: bool = True,
        on_commit: Callable[[Commit], None] | None = None,
    ) -> None:
        self.spec: TableSpec = get_spec(table)
        if table == "runs":
            raise WarehouseError("the runs table is written by Warehouse.run(), not by a TableWriter")
        if chunk_rows < 1 or chunk_seconds <= 0 or chunk_bytes < 1:
            raise WarehouseError("chunk_rows, chunk_seconds and chunk_bytes must be positive")
        self.store = open_store(root)
        self.root, self.table, self.run_id = self.store.root, table, run_id
        self.chunk_rows, self.chunk_seconds, self.chunk_bytes = chunk_rows, chunk_seconds, chunk_bytes
        self.compression, self.fsync, self.on_commit = compression, fsync, on_commit
        self.schema = self._target_schema(vector_dtype)
        self._names = frozenset(self.schema.names)
        self._required = tuple(c for c in self.spec.required if c != "run_id")
        self.dir = run_dir(self.store, table, run_id)
        self._seq = next_seq(self.dir, self.store)
        self._pieces: list[pa.Table] = []
        self._py_rows: list[dict[str, Any]] = []
        self._buffered = 0
        self._buffered_bytes = 0
        self._first_buffered_at: float | None = None
        self._lock = threading.RLock()
        self.rows_written = 0
        self.files_written = 0
        self.closed = False
        self._error: str | None = None

    def _target_schema(self, vector_dtype: str) -> pa.Schema:
        if vector_dtype == "float32":
            return self.spec.schema
        if vector_dtype != "float16":
            raise WarehouseError(f"vector_dtype {vector_dtype!r} is not valid: use float32 or float16")
        if not self.spec.alt_types or not any(VEC16 in t for t in self.spec.alt_types.values()):
            raise WarehouseError(
                f"table {self.table!r} stores vectors as float32 only; float16 is for activations"
            )
        schema = self.spec.schema
        for col in self.spec.vector_columns:
            i = schema.get_field_index(col)
            schema = schema.set(i, schema.field(i).with_type(VEC16))
        return schema

    # -- input -----------------------------------------------------------------------------------------

    def write(self, rows: Rows) -> None:
        """Buffer one row (a dict), many rows (an iterable of dicts) or an Arrow table/batch."""
        with self._lock:
            self._check_open()
            if isinstance(rows, pa.RecordBatch):
                rows = pa.Table.from_batches([rows])
            if isinstance(rows, pa.Table):
                self._flush_py_rows()
                self._add_piece(self._conform(rows))
            else:
                # check every row before buffering any: a bad row must not leave half an item behind
                batch = (
                    [self._prepare_row(rows)]
                    if isinstance(rows, Mapping)
                    else [self._prepare_row(r) for r in rows]
                )
                self._py_rows.extend(batch)
                self._note_buffered(len(batch), 0)
                if len(self._py_rows) >= _PY_BATCH:
                    self._flush_py_rows()
            self._maybe_commit()

    def write_columns(self, columns: Mapping[str, Any]) -> None:
        """Buffer rows given as columns (lists, numpy arrays, 2-D arrays for vectors, or a scalar for all)."""
        with self._lock:
            self._check_open()
            n = None
            for value in columns.values():
                if not _is_scalar(value):
                    n = len(value)
                    break
            if n is None:
                raise WarehouseError(f"write_columns({self.table}): give at least one column as a sequence")
            arrays: dict[str, pa.Array] = {}
            for name, value in columns.items():
                if name not in self.schema.names:
                    raise self._unknown([name])
                typ = self.schema.field(name).type
                if _is_scalar(value):
                    value = [value] * n
                if isinstance(value, np.ndarray) and value.ndim == 2:
                    flat = pa.array(value.reshape(-1))
                    value = pa.FixedSizeListArray.from_arrays(flat, value.shape[1])
                if len(value) != n:
                    raise WarehouseError(
                        f"write_columns({self.table}): column {name!r} has {len(value)} values, expected {n}"
                    )
                arrays[name] = (
                    value
                    if isinstance(value, pa.Array | pa.ChunkedArray)
                    else _to_array(value, typ, name, self.table)
                )
            self._flush_py_rows()
            self._add_piece(self._conform(pa.table(arrays)))
            self._maybe_commit()

    def _prepare_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(row, Mapping):
            raise WarehouseError(
                f"{self.table}: a row must be a dict of column -> value, got {type(row).__name__}"
            )
        if not self._names.issuperset(row):
            raise self._unknown([k for k in row if k not in self._names])
        rid = row.get("run_id")
        if rid is not None and rid != self.run_id:
            raise WarehouseError(
                f"{self.table}: row has run_id {rid!r} but this writer belongs to {self.run_id!r}"
            )
        for c in self._required:
            if row.get(c) is None:
                missing = [c for c in self._required if row.get(c) is None]
                raise WarehouseError(
                    f"{self.table}: row lacks required column(s) {', '.join(missing)}: {_short(row)}"
                )
        fixed = dict(row)  # a copy: callers may reuse their dict for the next row
        for col in self.spec.json_columns:
            v = fixed.get(col)
            if v is not None and not isinstance(v, str):
                fixed[col] = json.dumps(v, sort_keys=True, default=str)
        for col in self.spec.vector_columns:
            v = fixed.get(col)
            if v is not None and not isinstance(v, list | np.ndarray):
                fixed[col] = np.asarray(v, dtype=np.float32)  # torch tensors and other array-likes
        return fixed

    def _flush_py_rows(self) -> None:
        if not self._py_rows:
            return
        rows, self._py_rows = self._py_rows, []
        names = [n for n in self.schema.names if n != "run_id" and any(n in r for r in rows)]
        try:
            arrays = [pa.array([r.get(n) for r in rows], type=self.schema.field(n).type) for n in names]
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            # the buffered items are dropped whole (never committed) and the writer refuses further rows,
            # so a pipeline cannot carry on and finish a run that silently lacks them
            self._error = f"{self.table}: a row value does not fit the column type: {exc}"
            self._pieces, self._buffered, self._buffered_bytes, self._first_buffered_at = [], 0, 0, None
            self.closed = True
            raise WarehouseError(self._error) from None
        table = self._conform(pa.Table.from_arrays(arrays, names=names))
        self._pieces.append(table)
        self._buffered_bytes += table.nbytes

    def _add_piece(self, table: pa.Table) -> None:
        if table.num_rows:
            self._pieces.append(table)
            self._note_buffered(table.num_rows, table.nbytes)

    def _note_buffered(self, rows: int, nbytes: int) -> None:
        if self._first_buffered_at is None:
            self._first_buffered_at = time.monotonic()
        self._buffered += rows
        self._buffered_bytes += nbytes

    # -- conform: exact columns, safe casts, required values present --------------------------------------

    def _conform(self, table: pa.Table) -> pa.Table:
        unknown = [c for c in table.column_names if c not in self.schema.names]
        if unknown:
            raise self._unknown(unknown)
        n = table.num_rows
        columns = []
        for f in self.schema:
            if f.name in table.column_names:
                col = table.column(f.name)
                if f.name == "run_id" and n:
                    other = pc.unique(col.cast(pa.string())).to_pylist()
                    if other != [self.run_id]:
                        raise WarehouseError(
                            f"{self.table}: rows carry run_id {other} but this writer belongs to "
                            f"{self.run_id!r}"
                        )
                col = _cast(col, f.type, f.name, self.table)
            elif f.name == "run_id":
                col = pa.chunked_array([pa.array([self.run_id] * n, pa.string())])
            elif f.nullable:
                col = pa.chunked_array([pa.nulls(n, f.type)])
            else:
                raise WarehouseError(
                    f"{self.table}: required column {f.name!r} ({f.type}) is missing; columns given: "
                    f"{', '.join(table.column_names)}"
                )
            if not f.nullable and col.null_count:
                raise WarehouseError(
                    f"{self.table}: required column {f.name!r} has {col.null_count} null value(s)"
                )
            columns.append(col)
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _unknown(self, cols: list[str]) -> WarehouseError:
        return WarehouseError(
            f"table {self.table!r} has no column(s) {', '.join(map(repr, cols))}; its columns are "
            f"{', '.join(self.schema.names)}"
        )

    # -- commit --------------------------------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        if not self._buffered:
            return
        age = time.monotonic() - (self._first_buffered_at or time.monotonic())
        if (
            self._buffered >= self.chunk_rows
            or self._buffered_bytes >= self.chunk_bytes
            or age >= self.chunk_seconds
        ):
            self._commit()

    def flush(self) -> None:
        """Commit the buffered rows now (a no-op when nothing is buffered)."""
        with self._lock:
            self._flush_py_rows()
            if self._pieces:
                self._commit()

    def _commit(self) -> None:
        self._flush_py_rows()
        pieces, self._pieces = self._pieces, []
        self._buffered, self._buffered_bytes, self._first_buffered_at = 0, 0, None
        table = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        if not table.num_rows:
            return
        dims = {c: _width(table.column(c)) for c in self.spec.vector_columns}
        table = table.replace_schema_metadata(file_metadata(self.table, self.run_id, dims))
        path = self.store.path("tables", self.table, f"run_id={self.run_id}", part_name(self._seq))
        self._seq += 1
        write_atomic(table, path, compression=self.compression, fsync=self.fsync, store=self.store)
        self.rows_written += table.num_rows
        self.files_written += 1
        if self.on_commit is not None:
            self.on_commit(Commit(path, table.num_rows, self.rows_written))

    def close(self) -> None:
        """Commit what is left; the writer cannot be used afterwards."""
        with self._lock:
            if self._error is not None:
                raise WarehouseError(f"rows were dropped: {self._error}")
            if not self.closed:
                self.flush()
                self.closed = True

    def discard(self) -> int:
        """Drop buffered, uncommitted rows (returns how many); used when the data is known bad."""
        with self._lock:
            n = self._buffered
            self._pieces, self._py_rows = [], []
            self._buffered, self._buffered_bytes, self._first_buffered_at = 0, 0, None
            self.closed = True
            return n

    def _check_open(self) -> None:
        if self._error is not None:
            raise WarehouseError(f"this writer failed earlier and takes no more rows: {self._error}")
        if self.closed:
            raise WarehouseError(f"writer for {self.table} in run {self.run_id} is closed")

    @property
    def buffered_rows(self) -> int:
        return self._buffered

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bytes | int | float | bool | np.generic)


def _to_array(value: Any, typ: pa.DataType, name: str, table: str) -> pa.Array:
    try:
        if isinstance(value, np.ndarray) and value.dtype.kind in "US":
            return pa.array(value.astype(object), type=pa.string())
        if isinstance(value, np.ndarray) and pa.types.is_list(typ):
            value = list(value)
        return pa.array(value) if not pa.types.is_list(typ) else pa.array(value, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise WarehouseError(f"{table}: column {name!r} does not fit {typ}: {exc}") from None


def _compatible(src: pa.DataType, dst: pa.DataType) -> bool:
    """Casts that keep meaning: ints widen to floats, string flavours, list flavours, timestamp units."""
    t = pa.types
    if src == dst or t.is_null(src):
        return True
    if t.is_dictionary(src):
        return _compatible(src.value_type, dst)
    if t.is_integer(dst):
        return t.is_integer(src)
    if t.is_floating(dst):
        return t.is_integer(src) or t.is_floating(src)
    if t.is_string(dst):
        return t.is_string(src) or t.is_large_string(src)
    if t.is_boolean(dst):
        return t.is_boolean(src)
    if t.is_timestamp(dst):
        return t.is_timestamp(src)
    if t.is_list(dst) and (t.is_list(src) or t.is_large_list(src) or t.is_fixed_size_list(src)):
        return _compatible(src.value_type, dst.value_type)
    return False


def _cast(col: pa.ChunkedArray | pa.Array, typ: pa.DataType, name: str, table: str) -> pa.ChunkedArray:
    if isinstance(col, pa.Array):
        col = pa.chunked_array([col], type=col.type)
    if col.type == typ:
        return col
    if not _compatible(col.type, typ):
        raise WarehouseError(f"{table}: column {name!r} has type {col.type}, expected {typ}")
    try:
        if pa.types.is_timestamp(col.type) and col.type.tz is not None:
            col = pc.cast(col, pa.timestamp(col.type.unit, tz="UTC")).cast(pa.timestamp(col.type.unit))
        return col.cast(typ, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise WarehouseError(f"{table}: column {name!r} cannot be stored as {typ}: {exc}") from None


def _width(col: pa.ChunkedArray) -> int | None:
    """H when every vector in the column has the same length, else None."""
    if not len(col) or col.null_count == len(col):
        return None
    mm = pc.min_max(pc.list_value_length(col)).as_py()
    return int(mm["min"]) if mm["min"] == mm["max"] else None


def _short(row: Mapping[str, Any]) -> str:
    text = repr({k: v for k, v in row.items() if not isinstance(v, list | np.ndarray)})
    return text if len(text) < 200 else text[:200] + "…"
