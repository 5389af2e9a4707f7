"""`pvdata runs list` and `pvdata runs show RUN_ID`: what ran, from what, with which config and result."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pvdata.cli.options import add_warehouse_option, warehouse_root
from pvdata.errors import ConfigError, WarehouseError

STATUSES = ("running", "succeeded", "failed")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("runs", help="list runs and show one run's config, lineage, stats and error")
    runs_sub = parser.add_subparsers(dest="runs_command", metavar="ACTION", required=True)

    p_list = runs_sub.add_parser("list", help="runs, newest first")
    p_list.add_argument("--kind", help="only runs of this kind (extract, generate, judge, ...)")
    p_list.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p_list.add_argument("--limit", type=int, default=100, help="at most this many runs (0: all)")
    p_list.add_argument("--format", choices=("table", "csv", "json"), default="table")
    add_warehouse_option(p_list)
    p_list.set_defaults(func=run_list)

    p_show = runs_sub.add_parser("show", help="one run: config, parents and children, rows, stats, error")
    p_show.add_argument("run_id", metavar="RUN_ID", help="a run id or a unique prefix of one")
    p_show.add_argument("--format", choices=("text", "json"), default="text")
    add_warehouse_option(p_show)
    p_show.set_defaults(func=run_show)


def _status(root: Any, row: dict[str, Any]) -> str:
    from pvdata.warehouse.runs import run_is_alive

    if row["status"] == "running" and not run_is_alive(root, row["run_id"]):
        return "running (stale)"  # its process died; rerunning the same command resumes it
    return str(row["status"])


def _rows(con: Any, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(query, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


TABLE_WIDTH = 120  # `runs list` lines fit a 120-column terminal
TABLE_COLUMNS = ("run_id", "status", "started", "secs", "model", "trait", "dataset")
# what gives up width first when a line is too long, and down to how much
TABLE_FLEXIBLE = {"dataset": 20, "trait": 12, "model": 16}


def run_list(args: argparse.Namespace) -> int:
    from pvdata.warehouse.display import fit_widths, format_table, render
    from pvdata.warehouse.reader import connect
    from pvdata.warehouse.schema import RUN_KINDS

    if args.kind and args.kind not in RUN_KINDS:
        raise ConfigError(f"--kind {args.kind!r} is not a run kind; kinds: {', '.join(RUN_KINDS)}")
    root = warehouse_root(args.warehouse)
    con = connect(root)
    try:
        where, params = [], []
        if args.kind:
            where.append("kind = ?")
            params.append(args.kind)
        if args.status:
            where.append("status = ?")
            params.append(args.status)
        query = (
            "SELECT run_id, kind, status, attempt, model_id, started_at, finished_at, "
            "round(epoch(finished_at) - epoch(started_at), 1) AS seconds, "
            "array_to_string(parent_run_ids, ',') AS parents, error FROM runs"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY started_at DESC, run_id"
            + (f" LIMIT {int(args.limit)}" if args.limit > 0 else "")
        )
        rows = _rows(con, query, params)
        about = _about(con) if rows else {}
    finally:
        con.close()
    for r in rows:
        r["status"] = _status(root, r)
        r["trait"], r["dataset"] = about.get(r["run_id"], (None, None))
        if r["error"] and args.format == "table":
            r["error"] = r["error"].splitlines()[0]
    if not rows:
        print("no runs" + (" match" if args.kind or args.status else f" in warehouse {root}"))
        return 0
    if args.format != "table":
        columns = list(rows[0])
        print(render(args.format, columns, [tuple(r.values()) for r in rows]))
        return 0
    # the run id starts with the kind; the year, attempt, end time and parents are in `runs show`
    table = [
        (
            r["run_id"],
            r["status"],
            f"{r['started_at']:%m-%d %H:%M}" if r["started_at"] is not None else None,
            r["seconds"],
            r["model_id"] or "-",
            r["trait"] or "-",
            r["dataset"] or "-",
        )
        for r in rows
    ]
    caps = fit_widths(TABLE_COLUMNS, table, total=TABLE_WIDTH, flexible=TABLE_FLEXIBLE)
    lines = format_table(TABLE_COLUMNS, table, caps=caps).splitlines()
    out = lines[:2]
    for r, line in zip(rows, lines[2:], strict=True):
        out.append(line)
        if r["error"]:  # a failed run's first error line, under its row where it has the room
            out.append(_clip(f"    error: {r['error']}", TABLE_WIDTH))
    print("\n".join(out))
    return 0


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _about(con: Any) -> dict[str, tuple[str | None, str | None]]:
    """run_id -> (trait, dataset) of every run (parents too, which a stage may inherit them from)."""
    import duckdb

    from pvdata.warehouse.about import runs_about

    runs = _rows(con, "SELECT run_id, config, stats, parent_run_ids FROM runs")
    about = runs_about(runs)
    try:  # vector imports name only the file: the trait is in the vectors they wrote
        traits = dict(
            con.execute(
                "SELECT run_id, string_agg(DISTINCT trait, ',' ORDER BY trait) FROM vectors_all GROUP BY 1"
            ).fetchall()
        )
    except duckdb.CatalogException:  # no vectors table in this warehouse
        traits = {}
    return {k: (v.trait or traits.get(k), v.dataset) for k, v in about.items()}


def resolve_run_id(con: Any, text: str) -> str:
    ids = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
    if text in ids:
        return text
    matches = [i for i in ids if i.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise WarehouseError(f"no run {text!r} in this warehouse; list runs with `pvdata runs list`")
    raise WarehouseError(f"run id prefix {text!r} matches {len(matches)} runs: {', '.join(matches[:10])}")


def run_show(args: argparse.Namespace) -> int:
    from pvdata.warehouse import files
    from pvdata.warehouse.reader import connect
    from pvdata.warehouse.schema import TABLES

    root = warehouse_root(args.warehouse)
    con = connect(root)
    try:
        run_id = resolve_run_id(con, args.run_id)
        (run,) = _rows(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
        parents = _rows(
            con,
            "SELECT p.run_id, r.kind, r.status FROM (SELECT unnest(parent_run_ids) AS run_id FROM runs "
            "WHERE run_id = ?) p LEFT JOIN runs r USING (run_id) ORDER BY p.run_id",
            [run_id],
        )
        children = _rows(
            con,
            "SELECT run_id, kind, status FROM runs WHERE list_contains(parent_run_ids, ?) ORDER BY run_id",
            [run_id],
        )
        events = _rows(
            con,
            "SELECT seq, status, attempt, updated_at, host, pid FROM runs_all WHERE run_id = ? ORDER BY seq",
            [run_id],
        )
    finally:
        con.close()
    wh_root = files.resolve_root(root)
    tables: dict[str, dict[str, int]] = {}
    for t in TABLES:
        infos = files.table_files(wh_root, t, run_id)
        if infos and t != "runs":
            tables[t] = {"rows": sum(i.num_rows for i in infos), "files": len(infos)}
    config = json.loads(run["config"]) if run["config"] else None
    stats = json.loads(run["stats"]) if run["stats"] else None
    status = _status(root, run)
    if args.format == "json":
        from pvdata.warehouse.display import json_value

        out = {
            **{k: v for k, v in run.items() if k not in ("config", "stats")},
            "status": status,
            "config": config,
            "stats": stats,
            "parents": parents,
            "children": children,
            "tables": tables,
            "events": events,
        }
        print(json.dumps(json_value(out), indent=2))
        return 0
    print(_show_text(run, status, config, stats, parents, children, tables, events))
    return 0


def _fmt_time(v: Any) -> str:
    return f"{v:%Y-%m-%d %H:%M:%S} UTC" if v is not None else "-"


def _show_text(
    run: dict[str, Any],
    status: str,
    config: Any,
    stats: Any,
    parents: list[dict[str, Any]],
    children: list[dict[str, Any]],
    tables: dict[str, dict[str, int]],
    events: list[dict[str, Any]],
) -> str:
    def links(label: str, items: list[dict[str, Any]]) -> str:
        if not items:
            return f"{label}:".ljust(14) + "-"
        return f"{label}:\n" + "\n".join(
            f"  {i['run_id']}  ({i['kind'] or 'missing'}, {i['status'] or '?'})" for i in items
        )

    seconds = ""
    if run["finished_at"] is not None and run["started_at"] is not None:
        seconds = f"  ({(run['finished_at'] - run['started_at']).total_seconds():.1f} s)"
    git = run["git_commit"] or "-"
    if run["git_dirty"]:
        git += " (dirty)"
    lines = [
        f"run_id:       {run['run_id']}",
        f"kind:         {run['kind']}",
        f"status:       {status}  (attempt {run['attempt']})",
        f"model_id:     {run['model_id'] or '-'}",
        f"started_at:   {_fmt_time(run['started_at'])}",
        f"finished_at:  {_fmt_time(run['finished_at'])}{seconds}",
        f"pvdata:       {run['pvdata_version']}  git {git}",
        f"host, pid:    {run['host']}, {run['pid']}",
        f"config_hash:  {run['config_hash']}",
        links("parents", parents),
        links("children", children),
        "rows:"
        + (
            "\n" + "\n".join(f"  {t}: {v['rows']} rows in {v['files']} file(s)" for t, v in tables.items())
            if tables
            else " " * 9 + "-"
        ),
        f"error:        {run['error'] or '-'}",
        "config:",
        _indent(json.dumps(config, indent=2, sort_keys=True)),
        "stats:",
        _indent(json.dumps(stats, indent=2, sort_keys=True) if stats is not None else "-"),
        "events:",
        *(
            f"  {e['seq']}: {e['status']} (attempt {e['attempt']}) at {_fmt_time(e['updated_at'])}"
            for e in events
        ),
    ]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
