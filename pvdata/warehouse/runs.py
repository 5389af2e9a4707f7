"""The run lifecycle: a `runs` row says running at start and succeeded or failed at the end.

The runs table is append-only (dlt's loads table): each event is its own small file, and the `runs` view
keeps the latest event per run_id, so a killed run stays visible as 'running' until it is resumed. A run
id is a hash of (kind, config, parents, model), so rerunning the same command finds the same run, skips
the work items it committed, and finishes it; rerunning a finished run does nothing.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import json
import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pyarrow as pa

from pvdata.errors import WarehouseError
from pvdata.warehouse.files import (
    check_run_id,
    part_name,
    read_file,
    remove_stale_tmp,
    run_dir,
    table_dir,
    table_files,
    write_atomic,
)
from pvdata.warehouse.ids import canonical_json, config_hash
from pvdata.warehouse.lease import Lease
from pvdata.warehouse.redact import redact, redact_text
from pvdata.warehouse.schema import RUN_KINDS, TABLES, file_metadata, get_spec
from pvdata.warehouse.store import Store, open_store
from pvdata.warehouse.writer import Commit, TableWriter

log = logging.getLogger("pvdata.warehouse")

StatusBefore = Literal["new", "resumed", "already_succeeded"]


def utcnow() -> dt.datetime:
    """Naive UTC: every timestamp in the warehouse is UTC without a zone."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@functools.lru_cache(maxsize=1)
def git_info() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout pvdata runs from; (None, None) for an installed package."""
    pkg = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(pkg), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != pkg.parent:
        return None, None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (bool(status) if status is not None else None)


def _pvdata_version() -> str:
    from pvdata import __version__

    return __version__


class Warehouse:
    """A warehouse root: runs that write tables, and readers over them.

    `root` is a local folder (or file:// URI) or a filesystem URI such as s3://bucket/prefix (see
    store.py). `Warehouse.root` is then the local Path, or the URI as a str."""

    def __init__(self, root: str | os.PathLike[str] | Store) -> None:
        self.store = open_store(root)
        self.root: Path | str = self.store.root

    def __repr__(self) -> str:
        return f"Warehouse({self.uri!r})"

    @property
    def uri(self) -> str:
        """The root as users see it: a local path or a URI (never with credentials)."""
        return self.store.uri

    @property
    def is_local(self) -> bool:
        return self.store.is_local

    def exists(self) -> bool:
        """Whether the warehouse exists (on an object store: whether anything was written under it)."""
        return self.store.exists()

    def has_table(self, table: str) -> bool:
        """Whether any run wrote a file of this table (its folder exists)."""
        return self.store.is_dir(table_dir(self.store, table))

    def local_dir(self, *parts: str) -> Path:
        """A local folder for outputs that are files, not tables (exports, adapters): ROOT/<parts> for a
        local warehouse; for a remote one, <PVDATA_CACHE>/warehouses/<scheme>/<bucket>/<prefix>/<parts>."""
        if self.store.local is not None:
            return self.store.local.joinpath(*parts)
        from pvdata.models.cache import cache_root

        where = [p for p in self.store.base.strip("/").split("/") if p not in ("", ".", "..")]
        return cache_root().joinpath("warehouses", self.store.scheme, *where, *parts)

    def read_run_table(self, table: str, run_id: str, columns: Sequence[str] | None = None) -> pa.Table:
        """Everything one run committed to a table (all attempts), read straight from its files (a column
        added after a file was written reads as nulls for that file's rows)."""
        cols = list(columns) if columns is not None else None
        spec = get_spec(table)
        infos = table_files(self.store, table, run_id)
        if not infos:
            schema = spec.schema if cols is None else pa.schema([spec.schema.field(c) for c in cols])
            return schema.empty_table()
        tables = [read_file(self.store, i, cols) for i in infos]
        return pa.concat_tables(tables, promote_options="permissive")

    def run_id_for(
        self,
        kind: str,
        config: Any,
        *,
        parent_run_ids: Sequence[str] = (),
        model_id: str | None = None,
    ) -> str:
        """The deterministic id a run of this kind, config, parents and model gets."""
        chash = config_hash(redact(json.loads(canonical_json(config))))
        key = {"kind": kind, "config_hash": chash, "parents": sorted(parent_run_ids), "model_id": model_id}
        return f"{kind}-{config_hash(key)[:12]}"

    def run(
        self,
        kind: str,
        config: Any,
        *,
        parent_run_ids: Sequence[str] = (),
        model_id: str | None = None,
        force: bool = False,
        refresh_catalog: bool = True,
    ) -> Run:
        """A run context: `with wh.run("extract", cfg, parent_run_ids=[...]) as run: ...`."""
        return Run(
            self,
            kind,
            config,
            parent_run_ids=parent_run_ids,
            model_id=model_id,
            force=force,
            refresh_catalog=refresh_catalog,
        )

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """All runs rows of one run, oldest first."""
        rows = self.read_run_table("runs", run_id).to_pylist()
        return sorted(rows, key=lambda r: r["seq"])

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The latest runs row of a run, or None."""
        events = self.run_events(run_id)
        return events[-1] if events else None

    def connect(self, include_running: bool = False) -> Any:
        from pvdata.warehouse.reader import connect

        return connect(self.store, include_running=include_running)

    def refresh_catalog(self) -> Path | str | None:
        from pvdata.warehouse.reader import refresh_catalog

        return refresh_catalog(self.store)


class RunLock:
    """An flock on ROOT/.locks/<run_id>.lock: the kernel drops it when the process dies (kill -9 too)."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.path = root / ".locks" / f"{run_id}.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            run_id = self.path.stem
            raise WarehouseError(
                f"run {run_id} is being written by {holder}; wait for it to finish, or pass --force to "
                "start a separate run"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} on {socket.gethostname()} since {utcnow():%Y-%m-%d %H:%M:%S}Z".encode(), 0
        )
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def is_held_elsewhere(self) -> bool:
        """True when a live process holds this lock (a 'running' run whose process died is not held)."""
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the lock we may have taken
        return False


def run_lock(store: Store, run_id: str) -> RunLock | Lease:
    """flock for a local warehouse; a lease object for one on a filesystem URI (see lease.py)."""
    if store.local is not None:
        return RunLock(store.local, run_id)
    return Lease(store, run_id)


def run_is_alive(root: str | os.PathLike[str] | Store, run_id: str) -> bool:
    """Whether a process is writing this run right now."""
    return run_lock(open_store(root), run_id).is_held_elsewhere()


class Run:
    """One run of a pipeline step. Use as a context manager; see Warehouse.run."""

    def __init__(
        self,
        warehouse: Warehouse,
        kind: str,
        config: Any,
        *,
        parent_run_ids: Sequence[str] = (),
        model_id: str | None = None,
        force: bool = False,
        refresh_catalog: bool = True,
    ) -> None:
        if kind not in RUN_KINDS:
            raise WarehouseError(f"run kind {kind!r} is not valid; kinds: {', '.join(RUN_KINDS)}")
        if isinstance(parent_run_ids, str):
            parent_run_ids = [parent_run_ids]
        self.warehouse = warehouse
        self.store = warehouse.store
        self.root = warehouse.root
        self.kind = kind
        self.config: Any = redact(json.loads(canonical_json(config)))
        self.config_hash = config_hash(self.config)
        self.parent_run_ids = list(dict.fromkeys(parent_run_ids))
        self.model_id = model_id
        self.force = force
        self.refresh_catalog = refresh_catalog
        base = warehouse.run_id_for(kind, config, parent_run_ids=self.parent_run_ids, model_id=model_id)
        if force:
            base = f"{base}-f{utcnow():%Y%m%dT%H%M%S}{uuid.uuid4().hex[:4]}"
        self.run_id = check_run_id(base)
        self.status_before: StatusBefore = "new"
        self.attempt = 0
        self.message = ""
        self.stats: dict[str, Any] = {}
        self._lock = run_lock(self.store, self.run_id)
        self._writers: dict[str, TableWriter] = {}
        self._seq = 0
        self._started_at: dt.datetime | None = None
        self._t0 = 0.0
        self._entered = False
        self._finished = False

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, status_before={self.status_before!r})"

    @property
    def skipped(self) -> bool:
        """True when the run already succeeded: the body should do nothing."""
        return self.status_before == "already_succeeded"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> Run:
        if self._entered:
            raise WarehouseError(f"run {self.run_id} was already started; call Warehouse.run() again")
        self._entered = True
        for parent in self.parent_run_ids:
            if not self.store.is_dir(run_dir(self.store, "runs", parent)):
                raise WarehouseError(
                    f"parent run {parent!r} is not in warehouse {self.warehouse.uri}; list its runs with "
                    "`pvdata runs list`"
                )
        self._lock.acquire()
        try:
            self._start()
        except BaseException:
            self._lock.release()
            raise
        return self

    def _start(self) -> None:
        events = self.warehouse.run_events(self.run_id)
        self._seq = max((e["seq"] for e in events), default=0)
        last = events[-1] if events else None
        self._t0 = time.monotonic()
        if last is None:
            self.status_before, self.attempt, self._started_at = "new", 1, utcnow()
        elif last["status"] == "succeeded":
            self.status_before, self.attempt = "already_succeeded", last["attempt"] or 1
            when = last["finished_at"] or last["updated_at"]
            self.message = (
                f"run {self.run_id} already succeeded "
                f"(finished {when:%Y-%m-%d %H:%M:%S} UTC); nothing to do. "
                "Pass --force to recompute it as a new run."
            )
            log.info(self.message)
            return
        else:
            self.status_before, self.attempt = "resumed", (last["attempt"] or 0) + 1
            self._started_at = events[0]["started_at"] or utcnow()
            removed = remove_stale_tmp(self.store, self.run_id)
            self.message = (
                f"resuming run {self.run_id} (attempt {self.attempt}; last status {last['status']}"
                + (f", removed {removed} partial file(s)" if removed else "")
                + ")"
            )
            log.info(self.message)
        self._record("running")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.skipped or self._finished:
                return
            close_error: BaseException | None = None
            for writer in self._writers.values():
                try:
                    writer.close()  # commit buffered complete items even when the body failed
                except Exception as e:
                    close_error = close_error or e
            if exc is None and close_error is not None:
                exc = close_error
            if exc is None and isinstance(self._lock, Lease) and self._lock.lost:
                exc = WarehouseError(
                    f"run {self.run_id} lost its write lease (not renewed within {self._lock.ttl:g} s), so "
                    "another process may have written it meanwhile; rerun the command to check and finish it"
                )
            if exc is None:
                self._record("succeeded", stats=self._final_stats())
            else:
                message = (
                    "interrupted (KeyboardInterrupt)"
                    if isinstance(exc, KeyboardInterrupt)
                    else (f"{type(exc).__name__}: {exc}")
                )
                self._record("failed", stats=self._final_stats(), error=redact_text(message))
            self._finished = True
        finally:
            self._lock.release()
        if self.refresh_catalog:
            try:
                self.warehouse.refresh_catalog()
            except Exception as e:  # the catalog is a convenience; never fail a run over it
                log.warning("could not refresh the DuckDB catalog of %s: %s", self.warehouse.uri, e)
        if exc_type is None and exc is not None:
            raise exc  # a writer failed to commit on close

    def _final_stats(self) -> dict[str, Any]:
        totals = {t: sum(f.num_rows for f in table_files(self.store, t, self.run_id)) for t in TABLES}
        return {
            **self.stats,
            "rows": {t: w.rows_written for t, w in self._writers.items()},
            "rows_total": {t: n for t, n in totals.items() if n and t != "runs"},
            "seconds": round(time.monotonic() - self._t0, 3),
            "attempt": self.attempt,
            **({"forced": True} if self.force else {}),
        }

    def _record(
        self, status: str, *, stats: Mapping[str, Any] | None = None, error: str | None = None
    ) -> None:
        commit, dirty = git_info()
        self._seq += 1
        now = utcnow()
        row = {
            "run_id": self.run_id,
            "kind": self.kind,
            "status": status,
            "config": canonical_json(self.config),
            "config_hash": self.config_hash,
            "parent_run_ids": self.parent_run_ids,
            "model_id": self.model_id,
            "pvdata_version": _pvdata_version(),
            "git_commit": commit,
            "git_dirty": dirty,
            "started_at": self._started_at,
            "finished_at": now if status != "running" else None,
            "stats": canonical_json(stats) if stats is not None else None,
            "error": error,
            "attempt": self.attempt,
            "seq": self._seq,
            "updated_at": now,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        spec = get_spec("runs")
        table = pa.Table.from_pylist([row], schema=spec.schema)
        table = table.replace_schema_metadata(file_metadata("runs", self.run_id, {}))
        path = self.store.path("tables", "runs", f"run_id={self.run_id}", part_name(self._seq))
        write_atomic(table, path, compression="zstd", store=self.store)

    # -- what the pipeline uses -----------------------------------------------------------------------------

    def _check_active(self) -> None:
        if not self._entered:
            raise WarehouseError(f"run {self.run_id} is not started: use `with warehouse.run(...) as run:`")
        if self.skipped:
            raise WarehouseError(self.message)
        if self._finished:
            raise WarehouseError(f"run {self.run_id} has finished; start a new one")

    def writer(
        self,
        table: str,
        *,
        chunk_rows: int = 100_000,
        chunk_seconds: float = 60.0,
        chunk_bytes: int = 128 << 20,
        vector_dtype: str = "float32",
        compression: str = "zstd",
        fsync: bool = True,
    ) -> TableWriter:
        """The run's writer for a table (one per table: asking again returns the same writer)."""
        self._check_active()
        existing = self._writers.get(table)
        if existing is not None and not existing.closed:
            return existing
        writer = TableWriter(
            self.store,
            table,
            self.run_id,
            chunk_rows=chunk_rows,
            chunk_seconds=chunk_seconds,
            chunk_bytes=chunk_bytes,
            vector_dtype=vector_dtype,
            compression=compression,
            fsync=fsync,
            on_commit=self._on_commit,
        )
        if existing is not None:
            writer.rows_written = existing.rows_written
        self._writers[table] = writer
        return writer

    def _on_commit(self, commit: Commit) -> None:
        log.debug("committed %s rows to %s", commit.rows, commit.path)

    def done_ids(self, table: str, columns: str | Iterable[str] = "source_id") -> set[Any]:
        """Item ids this run already committed to a table: a str column gives strs, several give tuples."""
        if not self._entered:
            raise WarehouseError(f"run {self.run_id} is not started: use `with warehouse.run(...) as run:`")
        cols = [columns] if isinstance(columns, str) else list(columns)
        spec = get_spec(table)
        bad = [c for c in cols if c not in spec.columns]
        if bad:
            raise WarehouseError(
                f"table {table!r} has no column(s) {', '.join(bad)}; its columns: {spec.columns}"
            )
        out: set[Any] = set()
        for info in table_files(self.store, table, self.run_id):
            t = read_file(self.store, info, cols)
            if len(cols) == 1:
                out.update(t.column(0).to_pylist())
            else:
                out.update(zip(*(t.column(c).to_pylist() for c in cols), strict=True))
        return out

    def rows(self, table: str) -> pa.Table:
        """Everything this run committed to a table so far (all attempts)."""
        return self.warehouse.read_run_table(table, self.run_id)
