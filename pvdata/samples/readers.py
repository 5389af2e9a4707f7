"""Readers: JSONL (the research format), JSON arrays, CSV, Parquet, HF datasets (folders or hub ids);
JSONL, JSON and CSV may also be gzip, bzip2 or xz compressed (`pvdata.samples.compression`).

Each record may be in any record format of `pvdata.samples.formats` (messages, ShareGPT, Alpaca,
prompt/answer), told from its fields unless --format names one.

Every reader keeps going past a bad record (so one pass finds them all) and records why it is bad;
`check_invalid` then turns them into one error naming file and lines, unless the caller skips them.
The input is only ever read. dataset_id is a content hash of the bytes (a folder: every file's
relative path and bytes; a compressed file: the decompressed bytes), so a moved, renamed or
recompressed copy of the same data has the same id.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError, DataError
from pvdata.samples.compression import (
    chunks,
    codec,
    data_suffix,
    read_bytes,
    read_head,
    read_text,
)
from pvdata.samples.dataset import FORMATS, Dataset, build_dataset
from pvdata.samples.formats import check_columns, split_format
from pvdata.samples.hub import hub_rows, is_hub_id
from pvdata.samples.preference import ParsedSample, parse_sample
from pvdata.samples.records import Columns, RecordError

Parsed = tuple[int, str, ParsedSample | None, str | None]

SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
MAX_LISTED = 10


class InvalidRecordsError(DataError):
    """Some records cannot be screened; lists file and line of each (the first MAX_LISTED)."""

    def __init__(self, dataset: Dataset) -> None:
        bad = dataset.invalid
        lines = [f"  {dataset.source}:{r.line}: {r.error}" for r in bad[:MAX_LISTED]]
        if len(bad) > MAX_LISTED:
            lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
        what = "line" if dataset.format in ("jsonl", "json", "csv") else "row"
        super().__init__(
            f"{len(bad)} invalid record(s) of {dataset.n_records} in {dataset.source} ({what} numbers):\n"
            + "\n".join(lines)
            + "\nfix them, or pass --skip-invalid to screen the valid records and record these with "
            "their reason (samples.error)"
        )
        self.dataset = dataset


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The file format from --format, else from the suffix; a folder is a `datasets.save_to_disk`
    dataset. (A `.json` file is then told apart by its content: an array, or JSON Lines.) A compressed
    file (`.jsonl.gz`) has the format of the suffix before its codec's."""
    container, _ = split_format(fmt, FORMATS)
    if path.is_dir():
        return container or "hf"
    found = container or SUFFIXES.get(data_suffix(path))
    if found is None:
        raise ConfigError(
            f"cannot tell the format of {path} from its suffix {data_suffix(path)!r}: use .jsonl, .json, "
            ".csv, .parquet (JSONL, JSON and CSV may end in .gz, .bz2 or .xz), a folder written by datasets' "
            f"save_to_disk, or pass --format ({', '.join(FORMATS)})"
        )
    if found in ("parquet", "hf", "hub") and codec(path) is not None:
        raise ConfigError(
            f"{path}: a compressed {found} file is not read; Parquet compresses its own pages, so "
            "decompress the file first (JSONL, JSON and CSV are read compressed)"
        )
    return found


def content_hash(path: Path) -> str:
    """16 hex chars of sha256 over the file's bytes (decompressed: a `.jsonl.gz` hashes as its `.jsonl`),
    or over each file (relative path + bytes) of a folder."""
    h = hashlib.sha256()
    if not path.is_dir():
        for block in chunks(path):
            h.update(block)
        return h.hexdigest()[:16]
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(b"\0file\0" + f.relative_to(path).as_posix().encode() + b"\0")
        for block in chunks(f, decompress=False):
            h.update(block)
    return h.hexdigest()[:16]


def read_dataset(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    columns: Columns | None = None,
    hf_split: str | None = None,
) -> Dataset:
    """Read every record of a dataset file, folder or hub id; invalid records carry their reason."""
    columns = columns or Columns()
    container, schema = split_format(fmt, FORMATS)
    if (container == "hub" or not Path(path).expanduser().exists()) and is_hub_id(str(path)):
        names, rows, dataset_id = hub_rows(str(path), hf_split)
        parsed = _rows((str(path), names, rows), columns, schema)
        return build_dataset(str(path), "hub", dataset_id, parsed)
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(
            f"dataset {p} not found: give a .jsonl, .json, .csv or .parquet file, a datasets folder, or a "
            "Hugging Face hub id owner/name"
        )
    kind = detect_format(p, fmt)
    dataset_id = content_hash(p)
    source = str(p.resolve())
    if kind == "json":
        kind, parsed = _json(p, columns, schema)
    elif kind == "jsonl":
        parsed = list(_jsonl(p, columns, schema))
    elif kind == "csv":
        parsed = list(_csv(p, columns, schema))
    elif kind == "parquet":
        parsed = _rows(_parquet_rows(p), columns, schema)
    elif kind == "hf":
        parsed = _rows(_hf_rows(p, hf_split), columns, schema)
    else:
        raise ConfigError(f"--format hub needs a Hugging Face hub id owner/name, got the local path {p}")
    return build_dataset(source, kind, dataset_id, parsed)


def check_invalid(dataset: Dataset, skip_invalid: bool) -> None:
    """By default any invalid record is an error naming file and lines; with skip_invalid they are kept
    as records with their reason and left out of the screen."""
    if dataset.invalid and not skip_invalid:
        raise InvalidRecordsError(dataset)


def _parse(obj: Any, columns: Columns, schema: str | None) -> tuple[ParsedSample | None, str | None]:
    try:
        return parse_sample(obj, columns, schema), None
    except RecordError as exc:
        return None, str(exc)


def _json(path: Path, columns: Columns, schema: str | None) -> tuple[str, list[Parsed]]:
    """A `.json` file: a JSON array of records (first non-space character `[`), else JSON Lines."""
    if not is_json_array(path):
        parsed = list(_jsonl(path, columns, schema))
        if len(parsed) > 1 and parsed[0][3] is not None and parsed[0][3].startswith("invalid JSON"):
            _refuse_one_object(path)
        return "jsonl", parsed
    out: list[Parsed] = []
    for line, obj in json_array_items(path):
        chat, error = _parse(obj, columns, schema)
        out.append((line, json.dumps(obj, ensure_ascii=False), chat, error))
    return "json", out


def _refuse_one_object(path: Path) -> None:
    """A pretty-printed single JSON object is neither JSON Lines nor an array: say so once."""
    try:
        whole = json.loads(read_text(path))
    except (DataError, json.JSONDecodeError):
        return  # not one object either: the per-line errors stand
    if isinstance(whole, dict):
        keys = ", ".join(map(str, whole)) or "none"
        raise DataError(
            f"{path}:1: holds one JSON object spread over several lines (keys: {keys}), not JSON Lines "
            "(one record per line) or a JSON array of records ([{...}, {...}])"
        )


def is_json_array(path: Path) -> bool:
    """Whether the file's first non-space character is `[` (a JSON array, not JSON Lines)."""
    head = read_head(path, 4096).decode("utf-8", errors="replace")
    return head.lstrip("\ufeff \t\r\n").startswith("[")


def json_array_items(path: Path) -> Iterator[tuple[int, Any]]:
    """(line it starts on, value) of each element of a top-level JSON array; a syntax error stops the
    read (no later element can be found) and names file, line and column."""
    text = read_text(path)
    decoder = json.JSONDecoder()

    def skip_space(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def fail(i: int, what: str) -> DataError:
        n = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        return DataError(f"{path}:{n}: not a valid JSON array of records ({what} at column {col})")

    at = skip_space(text.index("[") + 1)
    line, counted = 1, 0
    if at < len(text) and text[at] == "]":
        return
    while True:
        line += text.count("\n", counted, at)
        counted = at
        try:
            obj, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise fail(exc.pos, exc.msg) from None
        yield line, obj
        at = skip_space(end)
        if at < len(text) and text[at] == "]":
            if skip_space(at + 1) != len(text):
                raise fail(skip_space(at + 1), "text after the closing ']'")
            return
        if at >= len(text) or text[at] != ",":
            raise fail(at, "expected ',' or ']'")
        at = skip_space(at + 1)


def _jsonl(path: Path, columns: Columns, schema: str | None = None) -> Iterator[Parsed]:
    """One record per non-blank line; the raw line text is kept byte for byte (surrogateescape)."""
    data = read_bytes(path)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line_bytes in enumerate(lines, start=1):
        raw = line_bytes.decode("utf-8", errors="surrogateescape")
        text = raw.lstrip("\ufeff") if number == 1 else raw
        if not text.strip():
            continue  # blank lines are not records
        try:
            line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, raw, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, raw, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
            continue
        chat, error = _parse(obj, columns, schema)
        yield number, raw, chat, error


def _csv(path: Path, columns: Columns, schema: str | None = None) -> Iterator[Parsed]:
    """A header row, then one record per row; `line` is where the row starts (quoted cells may span lines)."""
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        check_columns(str(path), header, columns, schema)
        previous_end = reader.line_num
        for cells in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not cells:
                continue  # a blank line is not a record
            if len(cells) != len(header):
                raw = json.dumps(cells, ensure_ascii=False)  # no object to rebuild: keep the cells as a list
                yield start, raw, None, f"{len(cells)} cells but the header has {len(header)} columns"
                continue
            row = dict(zip(header, cells, strict=True))
            raw = json.dumps(row, ensure_ascii=False)
            if row.get(columns.system) == "":
                del row[columns.system]  # an empty cell is no system prompt (CSV has no null)
            chat, error = _parse(row, columns, schema)
            yield start, raw, chat, error
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def _parquet_rows(path: Path) -> tuple[str, list[str], Iterator[dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from None

    def rows() -> Iterator[dict[str, Any]]:
        for batch in pf.iter_batches(batch_size=4096):
            yield from batch.to_pylist()

    return str(path), list(pf.schema_arrow.names), rows()


def _hf_rows(path: Path, split: str | None) -> tuple[str, list[str], Iterator[dict[str, Any]]]:
    try:
        import datasets
    except ImportError:
        from pvdata.errors import MissingExtraError

        raise MissingExtraError("datasets", "datasets") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # FileNotFoundError, ValueError... depending on what the folder holds
        raise DataError(
            f"{path} is not a dataset folder written by datasets' save_to_disk ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        pick = split or (names[0] if len(names) == 1 else "train" if "train" in names else None)
        if pick not in loaded:
            raise ConfigError(
                f"{path} holds splits {', '.join(names)}: pass --hf-split NAME to pick one"
                + (f" (got {split!r})" if split else "")
            )
        ds = loaded[pick]
    else:
        if split is not None:
            raise ConfigError(f"{path} is a single dataset, not a DatasetDict: drop --hf-split")
        ds = loaded
    return str(path), list(ds.column_names), iter(ds)


def _rows(
    source: tuple[str, list[str], Iterator[dict[str, Any]]], columns: Columns, schema: str | None
) -> list[Parsed]:
    where, names, rows = source
    check_columns(where, names, columns, schema)
    out: list[Parsed] = []
    for number, row in enumerate(rows, start=1):
        raw = json.dumps(row, ensure_ascii=False, default=str)
        chat, error = _parse(row, columns, schema)
        out.append((number, raw, chat, error))
    return out
