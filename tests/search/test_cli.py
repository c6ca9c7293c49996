"""``refserver search`` and ``refserver index`` on a real data folder."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.search.conftest import TOPICS


def test_search_prints_a_table_and_json(data_dir: Path) -> None:
    from refserver.cli import app

    runner = CliRunner()
    r = runner.invoke(
        app,
        ["search", "niobium cavities", "--mode", "keyword", "--limit", "3"],
        env={"COLUMNS": "160"},
    )
    assert r.exit_code == 0, r.output
    assert "1 matches" in r.output and "Superconducting" in r.output
    r = runner.invoke(app, ["search", "ammonite shells", "--json", "--limit", "2"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["mode"] == "hybrid" and body["results"][0]["title"] == TOPICS[1]["title"]
    r = runner.invoke(app, ["search", "x", "--mode", "nonsense"])
    assert r.exit_code == 2


def test_index_stats_and_rebuild(data_dir: Path) -> None:
    from refserver.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["index", "rebuild", "--m", "16", "--ef-search", "64"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["index", "stats", "--json"])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    pages = stats["collections"]["pages"]
    assert pages["chroma_entries"] == pages["sqlite_vectors"] == 12
    assert pages["hnsw"]["max_neighbors"] == 16 and pages["hnsw"]["ef_search"] == 64
    r = runner.invoke(app, ["index", "tune", "--queries", "10", "--target", "0.5"])
    assert r.exit_code == 0, r.output
    assert "chosen" in r.output and (data_dir / "index_tune.json").exists()
