"""`pvdata dashboard`: start the Streamlit app (dashboards/app.py) on a warehouse."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from pvdata.cli.options import add_warehouse_option, warehouse_root


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dashboard",
        help="review runs, vectors, steering, projections, screenings and training in a browser",
        description="Start the Streamlit dashboard on a warehouse. It only reads the warehouse, except for "
        "review verdicts on flagged samples, which it appends as runs of kind 'review'. "
        "Deep links: http://HOST:PORT/?page=screening&run_id=...&sample_id=...",
    )
    add_warehouse_option(parser)
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)",
    )
    parser.set_defaults(func=run)


def streamlit_command(app: Path, warehouse: str, port: int, host: str) -> list[str]:
    """The `python -m streamlit run ...` command line for the app."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--browser.gatherUsageStats",
        "false",
        "--server.runOnSave",
        "false",
        "--",
        "--warehouse",
        warehouse,
    ]


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from pvdata.dashboard.common import app_path
    from pvdata.errors import ConfigError, MissingExtraError
    from pvdata.warehouse.store import open_store

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a port number; give 1..65535, e.g. --port 8501")
    if importlib.util.find_spec("streamlit") is None:
        raise MissingExtraError("streamlit", "dashboard")
    app = app_path()
    store = open_store(warehouse_root(args.warehouse))
    root = str(store.root)
    if not store.exists():
        print(
            f"note: warehouse {root} does not exist yet; the dashboard shows how to fill it", file=sys.stderr
        )
    url = f"http://{args.host}:{args.port}/"
    print(f"pvdata dashboard on {url}  (warehouse {root}; Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(streamlit_command(app, root, args.port, args.host))

    def forward(signum: int, _frame: FrameType | None) -> None:
        proc.send_signal(signum)  # a terminated `pvdata dashboard` stops its server too

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)  # the terminal sent it too; make sure, then wait for a clean exit
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
