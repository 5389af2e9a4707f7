"""The screen's files: flagged.jsonl, kept.jsonl, unscreened.jsonl and summary.json.

The three record files hold the ORIGINAL records, untouched (for JSONL the line text itself, byte for
byte; for CSV, Parquet and HF datasets the row as a JSON object), in input order, every copy of a
duplicated sample beside its sample's decision. Together they are exactly the input. Each file is
written to a temporary name, fsynced and renamed, and summary.json goes last, so a crash leaves either
the previous files or complete new ones and a summary.json always describes the files beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvdata.errors import ConfigError

FILES = ("flagged.jsonl", "kept.jsonl", "unscreened.jsonl", "summary.json")


@dataclass(frozen=True)
class OutputPaths:
    out_dir: Path
    flagged: Path
    kept: Path
    unscreened: Path
    summary: Path

    @classmethod
    def under(cls, out_dir: str | os.PathLike[str]) -> OutputPaths:
        d = Path(out_dir)
        return cls(d, *(d / name for name in FILES))

    def files(self) -> list[Path]:
        return [self.flagged, self.kept, self.unscreened, self.summary]


def check_out_dir(out_dir: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> OutputPaths:
    """The output paths, refusing any that would overwrite an input (the input is never modified)."""
    paths = OutputPaths.under(out_dir)
    if paths.out_dir.exists() and not paths.out_dir.is_dir():
        raise ConfigError(f"--out {paths.out_dir} is a file: give a folder for the screen's output files")
    resolved = {Path(p).resolve() for p in inputs}
    for f in paths.files():
        target = f.resolve()
        if target in resolved or any(target.is_relative_to(r) for r in resolved if r.is_dir()):
            raise ConfigError(
                f"--out {paths.out_dir} would write {f.name} over the input {target}: choose another "
                "--out folder"
            )
    return paths


def write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines(records: Iterable[Any]) -> Iterable[bytes]:
    for record in records:
        yield record.raw.encode("utf-8", errors="surrogateescape") + b"\n"


def write_outputs(
    paths: OutputPaths,
    dataset: Any,
    flagged_ids: Collection[str],
    unscored_ids: Collection[str],
    summary: Mapping[str, Any],
) -> dict[str, int]:
    """Split the dataset's records into the three files and write summary.json last; returns the counts.

    A record goes to flagged.jsonl when its sample is flagged (by any trait, layer or method screened),
    to unscreened.jsonl when it is invalid or its sample could not be scored, else to kept.jsonl.
    """
    flagged, kept, unscreened = [], [], []
    for record in dataset.records:
        if record.sample_id is None or record.sample_id in unscored_ids:
            unscreened.append(record)
        elif record.sample_id in flagged_ids:
            flagged.append(record)
        else:
            kept.append(record)
    write_atomic(paths.flagged, _lines(flagged))
    write_atomic(paths.kept, _lines(kept))
    write_atomic(paths.unscreened, _lines(unscreened))
    counts = {"flagged": len(flagged), "kept": len(kept), "unscreened": len(unscreened)}
    full = {**summary, "records": {**dict(summary.get("records", {})), **counts}}
    text = json.dumps(full, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n"
    write_atomic(paths.summary, [text.encode()])
    return counts
