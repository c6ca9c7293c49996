"""A unified backup taken while papers are being written is one consistent point."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from refserver.context import AppContext
from refserver.safety.backup import engine_of
from refserver.safety.restore import restore
from refserver.safety.sqlite_pages import readonly
from tests.safety.conftest import add_direct, assert_consistent

_DUMP_IDS = r"""
import json, sys
import chromadb
from chromadb.config import Settings
c = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False))
ids = []
for name in ("pages", "papers"):
    try:
        col = c.get_collection(name)
    except Exception:
        continue
    ids += col.get(include=[])["ids"]
print(json.dumps(sorted(ids)))
"""


def _ids_in_copy(folder: Path) -> list[str]:
    """Chroma ids of a restored copy, read in a child process (DESIGN.md §4)."""
    out = subprocess.run(
        [sys.executable, "-c", _DUMP_IDS, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_unified_backup_during_ingest_is_consistent(ctx: AppContext, tmp_path: Path) -> None:
    for i in range(5):
        add_direct(ctx, tmp_path, i)
    stop = threading.Event()
    added: list[str] = []
    stalls: list[float] = []
    errors: list[BaseException] = []

    def writer() -> None:
        i = 100
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                added.append(add_direct(ctx, tmp_path, i, pages=1))
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                return
            stalls.append(time.monotonic() - t0)
            i += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        engine = engine_of(ctx)
        backups = [engine.create("full", unified=True)]
        backups.append(engine.create("incremental", unified=True))
        backups.append(engine.create("full", unified=True))
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    assert len(added) >= 3, "the writer must have written during the backups"
    for m in backups:
        assert m.status == "completed", m.error
        assert m.barrier_ms < 1000

    # each backup, rebuilt aside, is one point: generation and Chroma match its SQLite
    for n, m in enumerate(backups):
        out = restore(engine, m.id, target_path=f"check-{n}")
        folder = Path(out["target_path"])
        with readonly(folder / "refserver.db") as c:
            generation = c.execute("SELECT generation FROM library_state").fetchone()[0]
            sqlite_ids = sorted(r[0] for r in c.execute("SELECT chroma_id FROM vectors"))
            papers = c.execute("SELECT count(*) FROM papers").fetchone()[0]
        assert generation == m.generation and papers == m.counts["papers"]
        if m.kind == "full":
            assert _ids_in_copy(folder / "chroma") == sqlite_ids
        else:
            assert not (folder / "chroma").exists()  # rebuilt from SQLite on a live restore

    # restoring the last unified backup live needs no Chroma repair at all
    out = restore(engine, backups[-1].id)
    assert out["chroma_reconciled"] == {"upserted": 0, "deleted": 0}
    assert ctx.db.generation() == backups[-1].generation
    assert_consistent(ctx)


def test_writes_are_refused_during_the_swap_and_resume_after(
    ctx: AppContext, tmp_path: Path
) -> None:
    from refserver.storage.db import WritesPaused

    add_direct(ctx, tmp_path, 1)
    engine = engine_of(ctx)
    m = engine.create("full")
    stop = threading.Event()
    outcomes: list[str] = []

    def writer() -> None:
        i = 200
        while not stop.is_set():
            try:
                add_direct(ctx, tmp_path, i, pages=1)
                outcomes.append("written")
            except WritesPaused:
                outcomes.append("refused")
                time.sleep(0.01)
            except BaseException as exc:
                outcomes.append(f"error {exc!r}")
                return
            i += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        restore(engine, m.id)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)
    assert "refused" in outcomes, outcomes  # 503 territory while the stores were swapped
    assert not [o for o in outcomes if o.startswith("error")], outcomes
    assert outcomes[-1] == "written"  # and writes work again afterwards
    assert_consistent(ctx)
