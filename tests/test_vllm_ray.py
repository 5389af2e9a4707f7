"""`--backend vllm` with `--executor ray`: the base answers come from a vLLM engine inside a Ray actor,
and the screen equals the local executor's (same run ids, answers, projections, decisions, files).
Needs vLLM and Ray in one environment: run with `make test-vllm` (CPU build of vLLM, SmolLM2)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm not installed: run `make test-vllm`")
pytest.importorskip("ray", reason="ray not installed: run `make test-vllm`")

import ray
import torch

from pvdata.pipelines.screen import ScreenConfig, run_screen
from pvdata.vectors import PersonaVector
from pvdata.warehouse import connect

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[1] / "pvdata" / "data" / "demo_chat.jsonl"
QUERIES = {
    "generations": "SELECT generation_id, run_id, answer FROM generations ORDER BY 1",
    "projections": "SELECT source_id, layer, kind, value FROM projections ORDER BY 1, 2, 3",
    "screenings": "SELECT sample_id, method, score, flagged FROM screenings ORDER BY 1, 2",
    "runs": "SELECT run_id, kind, status FROM runs ORDER BY 1",
}


def _config(root: Path, **executor: object) -> ScreenConfig:
    return ScreenConfig(
        dataset=str(root / "train.jsonl"),
        model="smollm2-135m",
        vectors=[str(root / "evil.safetensors")],
        methods=["exact"],
        backend="vllm",
        dtype="float32",
        device="cpu",
        max_new_tokens=12,
        chunk_size=3,  # 6 prompts: two chunks, two commits
        **executor,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vllm-ray")
    (root / "train.jsonl").write_text("".join(DEMO.read_text().splitlines(keepends=True)[:6]))
    values = torch.randn(31, 576, generator=torch.Generator().manual_seed(3))
    PersonaVector(
        trait="evil", model_id="smollm2-135m", values=values, pooling="response_avg", method="mean_diff"
    ).save(root / "evil.safetensors")
    return root


def test_vllm_base_answers_on_ray_equal_the_local_run(root: Path) -> None:
    local, remote = root / "local", root / "ray"
    run_screen(_config(root), str(local), out=str(local / "out"), log=lambda _m: None)
    log: list[str] = []
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = _config(root, executor="ray", num_workers=1, cpus_per_worker=2)
        run_screen(cfg, str(remote), out=str(remote / "out"), log=log.append)
    finally:
        ray.shutdown()
    assert any("ray cluster:" in m for m in log), log  # it ran on the cluster
    for name, sql in QUERIES.items():
        got, want = connect(remote).execute(sql).fetchall(), connect(local).execute(sql).fetchall()
        assert len(got) == len(want) > 0, name
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, abs=1e-5) if name != "generations" else g == w, (name, g, w)
    texts = [t for _, _, t in connect(local).execute(QUERIES["generations"]).fetchall()]
    assert len(texts) == 6 and all(t.strip() for t in texts)  # six real base answers
    for name in ("flagged.jsonl", "kept.jsonl"):
        assert (remote / "out" / name).read_bytes() == (local / "out" / name).read_bytes(), name
