"""Query results as aligned text, CSV or JSON (for `pvdata sql` and `pvdata runs`), with no extra deps."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

FORMATS = ("table", "csv", "json")


def json_value(v: Any) -> Any:
    """A JSON-safe value: NaN/inf -> null, dates as ISO text, decimals as floats, bytes as base64."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(v)).decode()
    if isinstance(v, list | tuple):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    return v


def cell_text(v: Any) -> str:
    """Short human text of one value."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ", timespec="seconds")
    if isinstance(v, list | tuple | dict):
        return json.dumps(json_value(v), separators=(", ", ": "))
    return str(v)


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float | decimal.Decimal) and not isinstance(v, bool)


def format_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    max_width: int = 60,
    caps: Mapping[str, int] | None = None,
) -> str:
    """Aligned plain text; numbers right-aligned, long cells cut with '…' (at caps[column], else at
    max_width)."""
    limits = [(caps or {}).get(c, max_width) for c in columns]

    def clip(text: str, limit: int) -> str:
        text = text.replace("\n", "\\n")
        return text if len(text) <= limit else text[: limit - 1] + "…"

    cells = [[clip(cell_text(v), limit) for v, limit in zip(row, limits, strict=True)] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    right = [bool(rows) and all(_numeric(r[i]) or r[i] is None for r in rows) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def fit_widths(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, total: int, flexible: Mapping[str, int]
) -> dict[str, int]:
    """Caps for format_table so that every line fits `total` characters. The `flexible` columns give up
    width in their order, each down to its floor; if that is not enough, the widest of them gives up a
    character at a time (never below its header, or 6). The other columns keep their width."""
    natural = {c: len(c) for c in columns}
    for row in rows:
        for c, v in zip(columns, row, strict=True):
            natural[c] = max(natural[c], len(cell_text(v).replace("\n", "\\n")))
    caps = dict(natural)
    excess = sum(caps.values()) + 2 * (len(columns) - 1) - total
    for c, floor in flexible.items():
        if excess <= 0:
            break
        cut = min(excess, max(0, caps[c] - max(floor, len(c))))
        caps[c] -= cut
        excess -= cut
    while excess > 0:
        shrinkable = [c for c in flexible if caps[c] > max(len(c), 6)]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda c: caps[c])
        caps[widest] -= 1
        excess -= 1
    return caps


def format_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow(
            [
                ""
                if v is None
                else json.dumps(json_value(v))
                if isinstance(v, list | tuple | dict)
                else json_value(v)
                for v in row
            ]
        )
    return buf.getvalue().rstrip("\n")


def format_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A JSON array of objects, one per row."""
    records = [{c: json_value(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    return json.dumps(records, indent=None, ensure_ascii=False)


def render(fmt: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int = 60) -> str:
    if fmt == "table":
        return format_table(columns, rows, max_width=max_width)
    if fmt == "csv":
        return format_csv(columns, rows)
    if fmt == "json":
        return format_json(columns, rows)
    raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
