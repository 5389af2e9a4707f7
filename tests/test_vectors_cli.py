"""`pvdata vectors`: import into the warehouse, list, show, export; exact round trip through the table."""

from __future__ import annotations

import torch

from pvdata.cli.main import main
from pvdata.vectors import PersonaVector, load_vector
from pvdata.vectors.store import read_vector
from pvdata.warehouse import connect


def _vector() -> PersonaVector:
    values = torch.zeros(5, 8)
    values[2:] = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    return PersonaVector(
        trait="evil",
        model_id="tiny-random-llama",
        values=values,
        pooling="response_avg",
        n_pos=7,
        n_neg=9,
        provenance={"source": "test"},
    )


def test_import_list_show_export_round_trip(tmp_path, capsys):
    wh = str(tmp_path / "wh")
    vector = _vector()
    src = vector.save(tmp_path / "v.safetensors")
    assert main(["vectors", "import", str(src), "--warehouse", wh]) == 0
    assert vector.vector_id in capsys.readouterr().out

    stored = read_vector(connect(wh), vector.vector_id[:8])
    assert stored == vector and torch.equal(stored.values, vector.values)
    assert stored.layers == (2, 3, 4)

    assert main(["vectors", "list", "--warehouse", wh]) == 0
    listing = capsys.readouterr().out
    assert vector.vector_id in listing and "evil" in listing

    assert main(["vectors", "show", vector.vector_id, "--warehouse", wh]) == 0
    shown = capsys.readouterr().out
    assert f"{float(vector.norms()[3]):.4f}" in shown

    out = tmp_path / "research.pt"
    assert main(["vectors", "export", vector.vector_id, "--out", str(out), "--warehouse", wh]) == 0
    again = load_vector(out, trait="evil", model_id="tiny-random-llama")
    assert torch.equal(again.values, vector.values)

    gguf = tmp_path / "v.gguf"
    assert (
        main(["vectors", "export", vector.vector_id, "--out", str(gguf), "--coef", "2", "--warehouse", wh])
        == 0
    )
    assert gguf.exists()

    # importing the same file again is a finished run: nothing new is written
    assert main(["vectors", "import", str(src), "--warehouse", wh]) == 0
    assert connect(wh).execute("SELECT count(*) FROM vectors").fetchone()[0] == 3


def test_unknown_vector_id_is_a_clear_error(tmp_path, capsys):
    wh = tmp_path / "wh"
    src = _vector().save(tmp_path / "v.safetensors")
    assert main(["vectors", "import", str(src), "--warehouse", str(wh)]) == 0
    capsys.readouterr()
    assert main(["vectors", "show", "ffffffff", "--warehouse", str(wh)]) == 2
    assert "pvdata vectors list" in capsys.readouterr().err
