"""DISASTER_RECOVERY.md, followed literally: its commands run and recover the library."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from refserver.safety import offsite
from refserver.storage.models import Paper
from tests.recovery.conftest import add_papers, full_backup

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "DISASTER_RECOVERY.md"


def runbook_block(marker: str) -> str:
    """The fenced bash block of the runbook that starts with ``# runbook: <marker>``."""
    text = RUNBOOK.read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        if block.startswith(f"# runbook: {marker}\n"):
            return block
    raise AssertionError(f"no '# runbook: {marker}' block in {RUNBOOK}")


def run_block(block: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    full_env = {
        **os.environ,
        **env,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "COLUMNS": "200",
    }
    full_env = {k: v for k, v in full_env.items() if not k.startswith("PYTEST")}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def library_state(ctx: Any) -> dict[str, str]:
    with ctx.db.read() as s:
        return dict(s.execute(select(Paper.doc_id, Paper.file_sha256)).all())


def test_machine_lost_restore_from_encrypted_offsite_copy(rctx: Any, tmp_path: Path) -> None:
    # The old machine: a library, its backups, an encrypted offsite copy.
    full_backup(rctx)
    add_papers(rctx, tmp_path / "later", 2, seed=11)
    full_backup(rctx, "incremental")
    key_file = tmp_path / "offsite.key"
    offsite.generate_key(key_file)
    target = tmp_path / "offsite-bucket"
    assert offsite.push_and_record(rctx, str(target), str(key_file))["ok"]
    before = library_state(rctx)
    assert len(before) == 6

    # The machine is gone: a brand-new data folder, only the offsite copy and the key.
    fresh = tmp_path / "new-machine" / "data"
    block = runbook_block("machine-lost")
    assert "refserver dr restore" in block and "refserver offsite pull" in block
    proc = run_block(
        block,
        {"REFSERVER_DATA_DIR": str(fresh), "OFFSITE": str(target), "KEYFILE": str(key_file)},
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "consistency check: clean" in proc.stdout
    assert "drill PASSED" in proc.stdout

    from refserver.context import AppContext
    from refserver.safety.consistency import run_check
    from tests.recovery.conftest import recovery_settings

    ctx = AppContext(recovery_settings(fresh))
    try:
        assert library_state(ctx) == before
        for sha in set(before.values()):
            assert ctx.files.exists(sha)
        result = run_check(ctx)
        assert result["total_issues"] == 0, result["issues"]
    finally:
        ctx.close()


def test_chromadb_corrupted_rebuild_from_sqlite(rctx: Any, tmp_path: Path) -> None:
    """Section 3 of the runbook (its commands, without starting the server)."""
    data = rctx.settings.data_dir
    before = {c: rctx.vectors.count(c) for c in ("pages", "papers")}
    rctx.close()  # "stop the server first"
    rctx.vectors = None
    rctx.scheduler = None
    # Damage ChromaDB: its SQLite file becomes garbage.
    chroma_db = data / "chroma" / "chroma.sqlite3"
    chroma_db.write_bytes(b"\x00garbage" * 1000)
    block = runbook_block("chroma-corrupted")
    proc = run_block(block, {"REFSERVER_DATA_DIR": str(data)}, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (data / "chroma.broken").is_dir()

    from refserver.context import AppContext
    from tests.recovery.conftest import recovery_settings

    ctx = AppContext(recovery_settings(data))
    try:
        assert {c: ctx.vectors.count(c) for c in ("pages", "papers")} == before
    finally:
        ctx.close()


def test_sqlite_corrupted_restore_latest(rctx: Any, tmp_path: Path) -> None:
    """Section 2: a damaged database file, replaced by the newest verified backup."""
    full_backup(rctx)
    add_papers(rctx, tmp_path / "later", 1, seed=21)
    full_backup(rctx, "incremental")
    before = library_state(rctx)
    data = rctx.settings.data_dir
    rctx.close()  # "stop the server first"
    rctx.vectors = None
    db = data / "refserver.db"
    raw = bytearray(db.read_bytes())
    raw[4096 : 4096 * 3] = b"\xff" * (4096 * 2)  # garbage over the first table pages
    db.write_bytes(bytes(raw))
    proc = run_block(runbook_block("sqlite-corrupted"), {"REFSERVER_DATA_DIR": str(data)}, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "consistency check: clean" in proc.stdout
    assert (data.parent / "refserver-db-corrupt" / "refserver.db").is_file()

    from refserver.context import AppContext
    from tests.recovery.conftest import recovery_settings

    ctx = AppContext(recovery_settings(data))
    try:
        assert library_state(ctx) == before
    finally:
        ctx.close()


def test_undo_a_bad_import_point_in_time(rctx: Any, tmp_path: Path) -> None:
    """Section 4: restore the state just before a bad import (a safety backup is kept)."""
    import time
    from datetime import UTC, datetime

    full_backup(rctx)
    good = library_state(rctx)
    time.sleep(1.1)
    before_import = datetime.now(UTC).isoformat()
    time.sleep(1.1)
    add_papers(rctx, tmp_path / "bad", 3, seed=31)  # the bad import
    full_backup(rctx, "incremental")
    assert len(library_state(rctx)) == len(good) + 3
    data = rctx.settings.data_dir
    rctx.close()
    rctx.vectors = None
    proc = run_block(
        runbook_block("undo-import"),
        {"REFSERVER_DATA_DIR": str(data), "BEFORE": before_import},
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "safety backup of the previous state" in proc.stdout
    assert "consistency check: clean" in proc.stdout

    from refserver.context import AppContext
    from tests.recovery.conftest import recovery_settings

    ctx = AppContext(recovery_settings(data))
    try:
        assert library_state(ctx) == good
    finally:
        ctx.close()


def test_backup_disk_lost(rctx: Any, tmp_path: Path) -> None:
    """Section 5: the backups are gone; a new full, an offsite copy and a drill."""
    import shutil

    full_backup(rctx)
    data = rctx.settings.data_dir
    rctx.close()
    rctx.vectors = None
    shutil.rmtree(data / "backups")
    key_file = tmp_path / "k.key"
    offsite.generate_key(key_file)
    target = tmp_path / "offsite"
    env = {"REFSERVER_DATA_DIR": str(data), "OFFSITE": str(target), "KEYFILE": str(key_file)}
    proc = run_block(runbook_block("backup-disk-lost"), env, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "drill PASSED" in proc.stdout
    with offsite.open_target(str(target)) as t:
        assert len(offsite.list_remote(t, offsite.load_key(key_file))) == 1
