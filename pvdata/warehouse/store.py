"""Where a warehouse lives: a local folder, or a folder on a pyarrow or fsspec filesystem.

`--warehouse` takes a local path or `file://` URI (the default; flock, fsync and rename as before) or a
filesystem URI: `s3://bucket/prefix` (pyarrow's S3FileSystem; query options such as
`?endpoint_override=host:port&scheme=http&region=eu-west-1` pass through), `gs://`, `hdfs://`, `abfs://`
through pyarrow when it has them, and any other scheme fsspec knows (`memory://`, `gcs://` with gcsfs, ...)
through `pyarrow.fs.PyFileSystem(FSSpecHandler(...))`.

Credentials come from the environment only (AWS_* variables, profiles, instance roles: pyarrow's and
fsspec's defaults). A URI that carries them (`s3://key:secret@bucket`, `?secret_key=...`) is refused, so
they can never reach a run's config, a log line or an error message.

How a file is committed depends on the store (see docs/WAREHOUSE.md, "Warehouse on object storage"):
- local: `<name>.tmp`, fsync, rename;
- object stores (s3, gs, abfs, memory): one upload straight to the final key. The object becomes
  visible only when its upload completes (PutObject, or CompleteMultipartUpload), so a reader sees the
  whole file or nothing, and a killed upload leaves no object;
- other fsspec filesystems (sftp, ...): `<name>.tmp`, then a move, like local.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pvdata.errors import WarehouseError
from pvdata.warehouse.redact import REDACTED, is_secret_key, redact_text

# schemes pyarrow's FileSystem.from_uri knows; anything else goes to fsspec
_PYARROW_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
# stores where an object appears only once its upload completes: write straight to the final key
_ATOMIC_PUT = ("s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "memory")
# query parameters that carry credentials (pyarrow's S3 URI options, Azure SAS signatures)
_CREDENTIAL_PARAMS = ("access_key", "secret_key", "session_token", "sig", "account_key", "sas_token")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


@dataclass(frozen=True)
class Entry:
    """One file or folder of a listing."""

    name: str
    path: str
    is_dir: bool
    mtime_ns: int
    size: int


class Store:
    """A warehouse root on a filesystem: paths inside it, listing, reading and atomic writes."""

    def __init__(self, uri: str, fs: pafs.FileSystem, base: str, scheme: str, local: Path | None) -> None:
        self.uri = uri  # as shown to users; never holds credentials
        self.fs = fs
        self.base = base.rstrip("/") if base not in ("/", "") else base
        self.scheme = scheme
        self.local = local
        self.atomic_put = scheme in _ATOMIC_PUT

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    @property
    def is_local(self) -> bool:
        return self.local is not None

    @property
    def root(self) -> Path | str:
        """The local Path of a local warehouse, else its URI."""
        return self.local if self.local is not None else self.uri

    # -- paths ---------------------------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        """A path inside the warehouse, as the filesystem spells it."""
        if self.local is not None:
            return os.path.join(self.base, *parts)
        return posixpath.join(self.base, *parts) if self.base else posixpath.join(*parts)

    def display(self, path: str) -> str:
        """A path as users see it in messages: a local path, or scheme://bucket/key."""
        if self.local is not None:
            return path
        return f"{self.scheme}://{path.lstrip('/')}"

    @staticmethod
    def basename(path: str) -> str:
        return posixpath.basename(path.rstrip("/"))

    @staticmethod
    def dirname(path: str) -> str:
        return posixpath.dirname(path.rstrip("/"))

    # -- listing -------------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the warehouse root exists (on an object store: whether anything lies under it)."""
        return self.is_dir(self.base)

    def is_dir(self, path: str) -> bool:
        if self.local is not None:
            return os.path.isdir(path)
        try:
            return bool(self.fs.get_file_info(path).type == pafs.FileType.Directory)
        except OSError as exc:
            raise self.error(f"cannot read {self.display(path)}", exc) from None

    def list_dir(self, path: str, *, recursive: bool = False) -> list[Entry]:
        """Files and folders in a folder (all levels with recursive), name-sorted; [] when it is absent."""
        if self.local is not None and not recursive:
            try:
                with os.scandir(path) as it:
                    return sorted((_local_entry(e) for e in it), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self.error(f"cannot list {self.display(path)}", exc) from None
        out = []
        for fi in infos:
            if fi.type not in (pafs.FileType.File, pafs.FileType.Directory):
                continue
            mtime = fi.mtime_ns if fi.mtime_ns is not None else 0
            out.append(Entry(fi.base_name, fi.path, fi.type == pafs.FileType.Directory, mtime, fi.size or 0))
        return sorted(out, key=lambda e: e.path)

    # -- reading -------------------------------------------------------------------------------------------

    def read_metadata(self, path: str) -> pq.FileMetaData:
        if self.local is not None:
            return pq.read_metadata(path)
        with self.fs.open_input_file(path) as f:
            return pq.read_metadata(f)

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        if self.local is not None:
            return pq.read_table(path, columns=columns)
        return pq.read_table(path, columns=columns, filesystem=self.fs)

    def read_bytes(self, path: str) -> bytes | None:
        """A small file's bytes, or None when it does not exist."""
        try:
            with self.fs.open_input_stream(path) as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None

    # -- writing -------------------------------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file: straight to its key on object stores, else `<path>.tmp` and a move."""
        if self.local is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{path}.tmp"
            try:
                Path(tmp).write_bytes(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return
        try:
            if self.atomic_put:
                with self.fs.open_output_stream(path) as f:
                    f.write(data)
                return
            self.fs.create_dir(self.dirname(path), recursive=True)
            tmp = f"{path}.tmp"
            try:
                with self.fs.open_output_stream(tmp) as f:
                    f.write(data)
                self.fs.move(tmp, path)
            except BaseException:
                self.delete(tmp)
                raise
        except OSError as exc:
            raise self.error(f"cannot write {self.display(path)}", exc) from None

    def delete(self, path: str) -> None:
        """Delete a file; a missing one is no error."""
        if self.local is not None:
            Path(path).unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(path)

    def error(self, what: str, exc: BaseException) -> WarehouseError:
        return WarehouseError(
            f"warehouse {self.uri}: {what}: {redact_text(str(exc))}; check the URI, that the store is "
            "reachable, and the credentials in the environment (e.g. AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE)"
        )


def _local_entry(e: os.DirEntry[str]) -> Entry:
    is_dir = e.is_dir()
    if is_dir:
        return Entry(e.name, e.path, True, 0, 0)
    try:
        st = e.stat()
    except FileNotFoundError:
        return Entry(e.name, e.path, False, 0, -1)
    return Entry(e.name, e.path, False, st.st_mtime_ns, st.st_size)


# -- opening a store from a URI --------------------------------------------------------------------------

_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def split_scheme(text: str) -> tuple[str | None, str]:
    m = _SCHEME.match(text)
    if not m:
        return None, text
    return m.group(1).lower(), text[m.end() :]


def check_credentials(text: str) -> None:
    """Refuse a URI that carries credentials: they would land in configs, logs and errors."""
    scheme, rest = split_scheme(text)
    if scheme is None:
        return
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo = netloc.rpartition("@")[0] if "@" in netloc else None
    query = urllib.parse.parse_qs(rest.partition("?")[2], keep_blank_values=True)
    bad_params = [k for k in query if k.lower() in _CREDENTIAL_PARAMS or is_secret_key(k)]
    object_store = scheme in ("s3", "s3a", "gs", "gcs", "abfs", "abfss", "az")
    if (userinfo and (":" in userinfo or object_store)) or bad_params:
        shown = _mask_uri(text)
        what = "a key before '@'" if userinfo else f"the parameter(s) {', '.join(sorted(bad_params))}"
        raise WarehouseError(
            f"warehouse URI {shown} carries credentials ({what}); they are not accepted in a URI because "
            "the warehouse URI is printed and logged. Remove them and give them through the environment "
            "instead: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for s3://, "
            "GOOGLE_APPLICATION_CREDENTIALS for gs://, AZURE_STORAGE_* for abfs://"
        )


def _mask_uri(text: str) -> str:
    scheme, rest = split_scheme(text)
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc.split("?", 1)[0]:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    out = f"{scheme}://{netloc}{slash}{tail}"
    base, q, query = out.partition("?")
    if q:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        masked = [
            (k, REDACTED if k.lower() in _CREDENTIAL_PARAMS or is_secret_key(k) else v) for k, v in pairs
        ]
        out = base + "?" + "&".join(f"{k}={v}" for k, v in masked)
    return redact_text(out)


def open_store(root: str | os.PathLike[str] | Store) -> Store:
    """The Store of a warehouse root: a local path, a file:// URI, or a pyarrow/fsspec filesystem URI."""
    if isinstance(root, Store):
        return root
    text = os.fspath(root)
    scheme, rest = split_scheme(text)
    if scheme is None or scheme == "file" or (len(scheme) == 1 and os.name == "nt"):
        if scheme == "file":
            text = urllib.parse.unquote(rest) if rest.startswith("/") else rest
        local = Path(text).expanduser().absolute()
        return Store(str(local), pafs.LocalFileSystem(), str(local), "file", local)
    check_credentials(text)
    uri = _normalize(text)
    with _STORES_LOCK:
        store = _STORES.get(uri)
    if store is not None:
        return store
    fs, base = _filesystem(uri, scheme)
    store = Store(uri, fs, base, scheme, None)
    with _STORES_LOCK:
        return _STORES.setdefault(uri, store)


def _normalize(text: str) -> str:
    """Drop a trailing slash of the path part, keep the query (endpoint, region, ...)."""
    base, q, query = text.partition("?")
    scheme, rest = split_scheme(base)
    rest = rest.rstrip("/") or rest
    return f"{scheme}://{rest}" + (f"?{query}" if q else "")


def _filesystem(uri: str, scheme: str) -> tuple[pafs.FileSystem, str]:
    errors = []
    if scheme in _PYARROW_SCHEMES:
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
            return fs, path.rstrip("/")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
            errors.append(f"pyarrow: {redact_text(str(exc))}")
    try:
        import fsspec
    except ModuleNotFoundError:
        errors.append("fsspec is not installed")
    else:
        try:
            ffs, path = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError, OSError) as exc:
            errors.append(f"fsspec: {redact_text(str(exc))}")
        else:
            handler = pafs.FSSpecHandler(ffs)
            return pafs.PyFileSystem(handler), str(path).rstrip("/")
    raise WarehouseError(
        f"warehouse {_mask_uri(uri)}: no filesystem for {scheme}:// ({'; '.join(errors)}); use a local "
        "directory, s3://bucket/prefix, or a scheme fsspec knows (install its package, e.g. gcsfs for "
        "gcs://, adlfs for az://)"
    )


def clear_store_cache() -> None:
    """Forget opened stores (tests that restart a server on another port)."""
    with _STORES_LOCK:
        _STORES.clear()
