"""A built wheel, installed without the repository, finds traits/, training/ and the shipped data, and
the README's Python example runs from it (on the tiny model, with a vector `pvdata extract` made)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_installed_wheel_runs_the_readme_example(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building writes build/ and egg-info next to the sources
    src.mkdir()
    for name in ("pvdata", "traits", "training"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "dist").glob("pvdata-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (REPO / "traits").glob("*.yaml"):
        assert f"pvdata/bundled/traits/{shipped.name}" in names
    assert "pvdata/bundled/training/smollm2-135m-cpu.yaml" in names
    assert "pvdata/data/demo_chat.jsonl" in names and "pvdata/warehouse/sql/screen_vs_score.sql" in names

    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], tmp_path, env)
    work = tmp_path / "work"  # no repository here: only the installed package
    work.mkdir()
    env["PYTHONPATH"] = str(site)
    where = _run(
        [
            sys.executable,
            "-c",
            "import pvdata, pvdata.traits as t; print(pvdata.__file__); print(t.BUNDLED_DIR); "
            "print(','.join(t.list_traits()))",
        ],
        work,
        env,
    ).split()
    assert where[0].startswith(str(site)) and where[1].startswith(str(site))
    assert where[2].split(",") == sorted(p.stem for p in (REPO / "traits").glob("*.yaml"))

    cli = [sys.executable, "-m", "pvdata.cli.main"]
    _run(
        [
            *cli,
            *("extract", "--trait", "evil", "--model", "tiny-random-llama", "--judge", "scripted"),
            *("--questions", "2", "--instructions", "1", "--n-per-question", "1", "--max-new-tokens", "4"),
            *("--filter", "none", "--warehouse", "warehouse"),
        ],
        work,
        env,
    )
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    assert example is not None
    code = (
        example.group(1)
        .replace('"smollm2-135m"', '"tiny-random-llama"')
        .replace("max_new_tokens=64", "max_new_tokens=4")
    )
    (work / "example.py").write_text(code, encoding="utf-8")
    out = _run([sys.executable, "example.py"], work, env)
    assert "flagged" in out and "exact" in out
