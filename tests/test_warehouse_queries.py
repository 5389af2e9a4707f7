"""The standard analyses in warehouse/queries: identical to the package copies, and correct."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from warehouse_helpers import populate

from pvdata.warehouse import connect, describe_query, load_query, query_names

REPO_QUERIES = Path(__file__).resolve().parents[1] / "warehouse" / "queries"


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    root = tmp_path_factory.mktemp("queries")
    ids = populate(root)
    con = connect(root)
    yield con, ids
    con.close()


def _records(con, sql):
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def test_repo_queries_are_identical_to_the_package_copies():
    names = set(query_names())
    assert names == {
        "projection_vs_score",
        "steering_sweep",
        "screening_summary",
        "run_lineage",
        "shift_prediction",
        "screen_vs_score",
    }
    assert {p.stem for p in REPO_QUERIES.glob("*.sql")} == names
    for name in names:
        assert (REPO_QUERIES / f"{name}.sql").read_text() == load_query(name), name
        assert load_query(name).startswith(f"-- {name}:")
        assert describe_query(name)


def test_projection_vs_score_matches_numpy(populated):
    con, ids = populated
    rows = _records(con, load_query("projection_vs_score"))
    assert [(r["trait"], r["layer"], r["n"]) for r in rows] == [("evil", 2, 29), ("evil", 4, 29)]
    proj = con.execute(
        "SELECT p.value, j.score FROM projections p JOIN judgments j ON j.generation_id = p.source_id "
        "WHERE p.layer = 4 AND j.metric = 'evil' AND j.score IS NOT NULL"
    ).fetchnumpy()
    want = np.corrcoef(proj["value"], proj["score"])[0, 1]
    assert rows[1]["r"] == pytest.approx(want)
    assert rows[1]["r"] > 0.8  # the populate() data is built to correlate
    assert rows[1]["run_id"] == ids["evaluate"] and rows[1]["judge_model"] == "j"


def test_steering_sweep_groups_by_coef_and_layers(populated):
    con, _ = populated
    rows = _records(con, load_query("steering_sweep"))
    by_coef = {r["coef"]: r for r in rows}
    assert set(by_coef) == {0.0, 1.0, 2.0}
    assert by_coef[0.0]["layers"] == "none" and by_coef[0.0]["mode"] == "none"
    assert by_coef[2.0]["layers"] == "[4]" and by_coef[2.0]["vector_id"] == "evil-L4"
    assert all(r["n_generations"] == 10 for r in rows)
    # generation 0 has a null trait score: n_valid 9 and a 10% null rate at coef 0
    assert by_coef[0.0]["n_valid"] == 9 and by_coef[0.0]["trait_null_rate"] == pytest.approx(0.1)
    assert by_coef[1.0]["coherence_mean"] == pytest.approx(np.mean([80 + i % 5 for i in range(1, 30, 3)]))


def test_screening_summary(populated):
    con, ids = populated
    (row,) = _records(con, load_query("screening_summary"))
    assert row["run_id"] == ids["screen"] and row["n"] == 10 and row["n_flagged"] == 2
    assert row["flagged_rate"] == pytest.approx(0.2) and row["score_max"] == 8.0
    assert row["proj_diff_mean"] == pytest.approx(np.mean(np.arange(10) - 1.0))


def test_load_query_accepts_a_path(tmp_path):
    f = tmp_path / "mine.sql"
    f.write_text("SELECT 1")
    assert load_query(str(f)) == "SELECT 1"


def test_docs_list_every_table_and_column():
    from pvdata.warehouse import TABLES

    doc = (Path(__file__).resolve().parents[1] / "docs" / "WAREHOUSE.md").read_text()
    for name, spec in TABLES.items():
        assert f"**{name}**" in doc, name
        for col in spec.columns:
            assert f"`{col}`" in doc or f'`"{col}"`' in doc, (name, col)
