"""``refserver backup create|list|show|verify|restore|prune`` against a real data folder."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from refserver.context import AppContext
from tests.conftest import make_settings
from tests.safety.conftest import add_direct


def _json_tail(output: str) -> Any:
    """The JSON document a ``--json`` command printed last (a progress bar may precede it)."""
    start = min(i for i in (output.find("{"), output.find("[")) if i >= 0)
    return json.loads(output[start:])


def _segments(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return c.execute(
            "SELECT count(DISTINCT id >> 37) FROM paper_bodies_fts_data WHERE id >= (1 << 37)"
        ).fetchone()[0]


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A closed data folder with papers (the CLI must own ChromaDB for a full backup)."""
    from refserver.cli import app
    from refserver.config import get_settings

    settings = make_settings(tmp_path / "data")
    ctx = AppContext(settings)
    try:
        for i in range(6):  # one write each: FTS5 writes several index segments
            add_direct(ctx, tmp_path, i)
    finally:
        ctx.close()
    monkeypatch.setenv("REFSERVER_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, ["backup", *args], env={"COLUMNS": "200"})

    yield settings, invoke, tmp_path
    get_settings.cache_clear()


def test_backup_cli_round_trip(library: Any) -> None:
    settings, cli, tmp_path = library
    assert _segments(settings.sqlite_path) > 1
    r = cli("create", "--type", "full", "--description", "from the CLI", "--json")
    assert r.exit_code == 0, r.output
    full = _json_tail(r.output)
    assert full["status"] == "completed" and full["type"] == "full"
    assert full["description"] == "from the CLI"
    assert _segments(settings.sqlite_path) == 1  # compacted before the full

    ctx = AppContext(settings)
    try:
        add_direct(ctx, tmp_path, 6)
    finally:
        ctx.close()
    r = cli("create", "--type", "incremental", "--json")
    assert r.exit_code == 0, r.output
    inc = _json_tail(r.output)
    assert inc["status"] == "completed" and inc["parent_id"] == full["backup_id"]

    r = cli("list", "--json")
    assert r.exit_code == 0, r.output
    assert [b["backup_id"] for b in _json_tail(r.output)] == [inc["backup_id"], full["backup_id"]]
    r = cli("show", inc["backup_id"])
    assert r.exit_code == 0 and _json_tail(r.output)["id"] == inc["backup_id"]
    r = cli("verify", inc["backup_id"], "--json")
    assert r.exit_code == 0, r.output
    assert _json_tail(r.output)["integrity_check"] == "passed"

    r = cli("restore", inc["backup_id"], "--target", "inspect")
    assert r.exit_code == 0, r.output
    restored = settings.restore_dir / "inspect" / "refserver.db"
    with sqlite3.connect(restored) as c:
        assert c.execute("SELECT count(*) FROM papers").fetchone()[0] == 7
    assert cli("restore", inc["backup_id"], "--target", "/etc").exit_code == 1

    r = cli("prune", "--dry-run")
    assert r.exit_code == 0 and "would remove 0 backup(s)" in r.output
    assert cli("show", "no-such-backup").exit_code == 1
