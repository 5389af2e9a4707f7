"""Compressed data files: `train.jsonl.gz`, `.bz2`, `.xz`, read as the file inside them.

Datasets are often shipped compressed, and asking users to unpack a 10 GB JSONL before screening it
is friction with no benefit. The codec comes from the last suffix, the format from the one before it
(`chats.jsonl.gz` is JSONL); line numbers, raw record text and content hashes are those of the
decompressed data, so a compressed and a plain copy of the same data are the same dataset. Only the
standard library's codecs are read: a `.zst` or `.zip` is refused with what to do instead.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Callable, Generator
from pathlib import Path

from pvdata.errors import ConfigError, DataError

# Each opens a file for reading (the default mode of all three).
CODECS: dict[str, Callable[[Path], io.BufferedIOBase]] = {
    ".gz": gzip.GzipFile,
    ".bz2": bz2.BZ2File,
    ".xz": lzma.LZMAFile,
}
UNREAD = {".zst": "zstd -d", ".zstd": "zstd -d", ".zip": "unzip", ".lz4": "lz4 -d", ".7z": "7z x"}
DECODE_ERRORS = (OSError, EOFError, lzma.LZMAError)  # BadGzipFile is an OSError; bz2 raises OSError too


def codec(path: Path) -> str | None:
    """The compression suffix of `path` (`.gz`, `.bz2`, `.xz`), None for a plain file; an archive or
    codec the standard library cannot read is a ConfigError saying how to unpack it."""
    suffix = path.suffix.lower()
    if suffix in UNREAD:
        raise ConfigError(
            f"{path} is {suffix[1:]}-compressed, which pvdata does not read: unpack it first "
            f"({UNREAD[suffix]} {path.name}) or recompress it as .gz, .bz2 or .xz"
        )
    return suffix if suffix in CODECS else None


def data_suffix(path: Path) -> str:
    """The suffix that names the data format, lower case: `.jsonl` for both `a.jsonl` and `a.jsonl.gz`."""
    if codec(path) is None:
        return path.suffix.lower()
    return Path(path.stem).suffix.lower()


def open_bytes(path: Path) -> io.BufferedIOBase:
    """The file's data as a binary stream, decompressed when its suffix says so."""
    found = codec(path)
    return path.open("rb") if found is None else CODECS[found](path)


def chunks(path: Path, size: int = 1 << 20, *, decompress: bool = True) -> Generator[bytes]:
    """The data in blocks of up to `size` bytes (decompressed unless told not to); a corrupt or
    truncated archive is a DataError naming the file."""
    try:
        with open_bytes(path) if decompress else path.open("rb") as fh:
            while block := fh.read(size):
                yield block
    except DECODE_ERRORS as exc:
        if not decompress or codec(path) is None:
            raise
        raise corrupt(path, exc) from None


def read_bytes(path: Path) -> bytes:
    """All of the file's data, decompressed."""
    return path.read_bytes() if codec(path) is None else b"".join(chunks(path))


def read_head(path: Path, n: int) -> bytes:
    """The first n bytes of the data (decompressed): enough to tell a JSON array from JSON Lines."""
    blocks = chunks(path, n)
    try:
        return next(blocks, b"")
    finally:
        blocks.close()


def read_text(path: Path) -> str:
    """The data as UTF-8 text (a leading BOM dropped); anything else is a DataError naming the byte."""
    try:
        return read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def corrupt(path: Path, exc: BaseException) -> DataError:
    name = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}.get(codec(path) or "", "compressed")
    return DataError(f"{path} is not a readable {name} file: {exc}")
