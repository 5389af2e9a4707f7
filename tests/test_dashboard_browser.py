"""The dashboard in a real browser: `pvdata dashboard` started as a subprocess on a free loopback port,
Debian's headless chromium driven over the Chrome DevTools protocol (a websocket), one screenshot and
DOM checks per page, and a review verdict clicked in the page and found in the warehouse.

Screenshots go to pytest's temporary folder (the path is printed), or to $PVDATA_SCREENSHOT_DIR.
chromium comes from apt (`make test` installs it when absent); no tool downloads a browser.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from dashboard_fixture import SCREEN_LINES, TOP_K, Built

from pvdata.dashboard.common import PAGES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium: apt-get install -y chromium (make test does it)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any]) -> None:
    """Stop a process started in its own session, and its children (only what this test started)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(dash: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`pvdata dashboard` on a copy of the fixture warehouse (the review click writes to it)."""
    base = tmp_path_factory.mktemp("dashboard_server")
    root = base / "wh"
    shutil.copytree(dash.root, root)
    port = free_port()
    exe = Path(sys.executable).with_name("pvdata")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "pvdata.cli.main"]
    log = (base / "server.log").open("w")
    env = {**os.environ, "PVDATA_REVIEWER": "browser-test", "HF_HUB_OFFLINE": "1"}
    cmd = [*cli, "dashboard", "--warehouse", str(root), "--port", str(port), "--host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"pvdata dashboard exited with {proc.returncode}:\n{(base / 'server.log').read_text()}"
                )
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"pvdata dashboard did not answer in 60 s:\n{(base / 'server.log').read_text()}")
            time.sleep(0.3)
        yield url, root
    finally:
        stop(proc)
        log.close()


class Chrome:
    """Headless chromium and one page, driven over the DevTools protocol."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 2200) -> None:
        from websockets.sync.client import connect

        assert CHROMIUM is not None
        args = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
            "--disable-background-networking", "--remote-debugging-port=0", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:  # stderr keeps flowing (a full pipe would stall chromium)
            for text in self.proc.stderr or []:
                lines.put(text)

        threading.Thread(target=pump, daemon=True).start()
        port: int | None = None
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while port is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                stop(self.proc)
                raise AssertionError("chromium did not open its DevTools port:\n" + "".join(seen)) from None
            seen.append(line)
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(found.group(1)) if found else None
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self._ids = itertools.count(1)
        self.call("Page.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        i = next(self._ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == i:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"javascript failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def state(self) -> dict[str, Any]:
        """The page as the checks see it: script state, text, metrics, charts, exceptions."""
        return dict(
            self.js(
                """(() => {
                const app = document.querySelector('[data-testid="stApp"]');
                const metrics = {};
                document.querySelectorAll('[data-testid="stMetric"]').forEach(m => {
                    const label = m.querySelector('[data-testid="stMetricLabel"]');
                    const value = m.querySelector('[data-testid="stMetricValue"]');
                    if (label && value) metrics[label.innerText.trim()] = value.innerText.trim();
                });
                const charts = Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]'));
                return {
                    script: app ? app.getAttribute('data-test-script-state') : null,
                    running: !!document.querySelector('[data-testid="stStatusWidget"]'),
                    text: document.body.innerText,
                    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
                    metrics: metrics,
                    charts: charts.length,
                    drawn: charts.filter(c => c.querySelector('canvas, svg')).length,
                    graphviz: document.querySelectorAll('[data-testid="stGraphVizChart"]').length,
                    graphviz_drawn: document.querySelectorAll('[data-testid="stGraphVizChart"] svg').length,
                    exceptions: Array.from(document.querySelectorAll('[data-testid="stException"]'))
                        .map(e => e.innerText),
                };
            })()"""
            )
        )

    def wait_for(
        self, *expected: str, charts: int = 0, graphviz: int = 0, timeout: float = 45
    ) -> dict[str, Any]:
        """Until the script has finished, every expected text shows and this many Vega-Lite charts and
        Graphviz graphs have drawn (their code loads lazily, after the text)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.state()
            done = s["script"] == "notRunning" and not s["running"] and all(e in s["text"] for e in expected)
            if done and (s["drawn"], s["graphviz_drawn"]) == (charts, graphviz) == (
                s["charts"],
                s["graphviz"],
            ):
                return s
            if s["exceptions"] or time.monotonic() > deadline:
                missing = [e for e in expected if e not in s["text"]]
                counts = {k: s[k] for k in ("charts", "drawn", "graphviz", "graphviz_drawn")}
                raise AssertionError(
                    f"page not ready: missing texts {missing}; charts {counts}, expected {charts} charts and "
                    f"{graphviz} graphs; exceptions {s['exceptions']}; script {s['script']}"
                )
            time.sleep(0.25)

    def open(self, url: str, *expected: str, charts: int = 0, graphviz: int = 0) -> dict[str, Any]:
        self.call("Page.navigate", url=url)
        time.sleep(0.5)  # let the old document go
        return self.wait_for(*expected, charts=charts, graphviz=graphviz)

    def screenshot(self, path: Path) -> Path:
        time.sleep(0.5)  # chart transitions
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._stack.close()
        stop(self.proc)


def _rows(root: Path, table: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in sorted((root / "tables" / table).glob("run_id=*/*.parquet")):
        out.extend(pq.read_table(f).to_pylist())
    return out


def _expected(dash: Built, root: Path) -> dict[str, Any]:
    """Numbers each page must show, from the Parquet files (no pvdata reader)."""
    latest: dict[str, dict[str, Any]] = {}
    for e in sorted(_rows(root, "runs"), key=lambda r: r["seq"]):
        latest[e["run_id"]] = e
    judgments = [j for j in _rows(root, "judgments") if j["metric"] == "evil" and j["score"] is not None]
    proj = {
        p["source_id"]: p["value"]
        for p in _rows(root, "projections")
        if p["run_id"] == dash.monitor_run and p["layer"] == 2 and p["kind"] == "prompt_last_proj"
    }
    pairs = np.array(
        [(proj[j["generation_id"]], j["score"]) for j in judgments if j["generation_id"] in proj]
    )
    exact = [
        s for s in _rows(root, "screenings") if s["run_id"] == dash.screen_run and s["method"] == "exact"
    ]
    cells = [p for p in latest[dash.evaluate_run]["parent_run_ids"] if p.startswith("generate-")]
    top = max(exact, key=lambda s: s["score"])
    messages = next(
        json.loads(s["messages"]) for s in _rows(root, "samples") if s["sample_id"] == top["sample_id"]
    )
    return {
        "runs": len(latest),
        "failed": sum(r["status"] == "failed" for r in latest.values()),
        "r": f"{np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]:.3f}",
        "n": str(len(pairs)),
        "flagged": str(sum(s["flagged"] for s in exact)),
        "threshold": f"{np.sort([s['score'] for s in exact])[-TOP_K]:.3f}",
        "top": top["sample_id"],
        "question": messages[0]["content"],
        "generations": str(sum(g["run_id"] in cells for g in _rows(root, "generations"))),
    }


def test_every_page_in_a_real_browser(
    dash: Built,
    server: tuple[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, root = server
    shots = Path(os.environ.get("PVDATA_SCREENSHOT_DIR") or tmp_path_factory.mktemp("dashboard_screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\ndashboard screenshots: {shots}")
    expect = _expected(dash, root)
    generate = next(p for p in _rows(root, "runs") if p["run_id"] == dash.extract_runs["evil"])[
        "parent_run_ids"
    ][0]
    chrome = Chrome(tmp_path_factory.mktemp("chromium_profile"))
    try:
        s = chrome.open(f"{url}/?page=runs&run_id={generate}", "Lineage", "descendant", charts=1, graphviz=1)
        assert s["metrics"]["Runs"] == str(expect["runs"]) and s["metrics"]["Failed"] == str(expect["failed"])
        assert s["metrics"]["Kind"] == "generate"
        chrome.screenshot(shots / "runs.png")

        s = chrome.open(
            f"{url}/?page=vectors",
            "Norm per layer",
            "Cosine similarity",
            "Source runs",
            *sorted({v["run_id"] for v in _rows(root, "vectors")}),
            charts=2,
        )
        chrome.screenshot(shots / "vectors.png")

        s = chrome.open(f"{url}/?page=steering", "trait score (n_valid/n)", "Run lineage", charts=2)
        assert s["metrics"]["Cells"] == "6" and s["metrics"]["Generations"] == expect["generations"]
        assert f"?page=runs&run_id={dash.evaluate_run}" in s["links"]
        chrome.screenshot(shots / "steering.png")

        s = chrome.open(f"{url}/?page=projection&run_id={dash.monitor_run}", "r per layer", charts=2)
        assert s["metrics"]["Pearson r"] == expect["r"] and s["metrics"]["n"] == expect["n"]
        chrome.screenshot(shots / "projection.png")

        top = expect["top"]
        s = chrome.open(
            f"{url}/?page=screening&sample_id={top}", "Ranked samples", "Base model's answer", charts=1
        )
        assert s["metrics"]["Samples"] == str(SCREEN_LINES) and s["metrics"]["Flagged"] == expect["flagged"]
        assert expect["flagged"] == str(TOP_K) and s["metrics"]["Threshold"] == expect["threshold"]
        # the whole conversation and the base model's own answer
        assert expect["question"] in s["text"] and "base: tiny-random-llama" in s["text"]
        # the screen run was found from the sample alone
        assert f"?page=screening&run_id={dash.screen_run}&sample_id={top}" in s["links"]
        chrome.screenshot(shots / "screening.png")
        clicked = chrome.js(
            """(() => { const b = Array.from(document.querySelectorAll('button'))
                 .find(b => b.innerText.trim() === 'Confirm (trait present)');
               if (b) b.click(); return !!b; })()"""
        )
        assert clicked
        chrome.wait_for(f"recorded confirmed for {top}", charts=1)
        reviews = _rows(root, "reviews")
        assert [(r["sample_id"], r["verdict"], r["reviewer"]) for r in reviews] == [
            (top, "confirmed", "browser-test")
        ]
        chrome.screenshot(shots / "screening-reviewed.png")

        s = chrome.open(
            f"{url}/?page=training",
            "Unsteered",
            "Steered",
            "Evaluation rows",
            dash.train_runs["steered"],
            dash.train_runs["unsteered"],
            charts=6,
        )
        chrome.screenshot(shots / "training.png")

        s = chrome.open(
            f"{url}/?page=experiments",
            "Filtering: shift left after dropping the top share",
            "Datasets",
            "Pre-finetune measure",
            charts=1,
        )
        chrome.screenshot(shots / "experiments.png")

        # an unknown page falls back to Runs, whose newest run is now the review, a child of the screen run
        s = chrome.open(f"{url}/?page=nope", "Durations", "ancestor", charts=1, graphviz=1)
        assert s["metrics"]["Runs"] == str(expect["runs"] + 1) and s["metrics"]["Kind"] == "review"
    finally:
        chrome.close()
    for name in [*PAGES, "screening-reviewed"]:
        png = (shots / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, name  # a drawn page, not a blank one
