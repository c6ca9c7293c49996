"""Round trips: ingest → backup → wipe → restore → the same library, for every kind."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from refserver.config import Settings
from refserver.context import AppContext
from refserver.safety import retention
from refserver.safety import sqlite_pages as sp
from refserver.safety.backup import BackupEngine, ChainGap, engine_of
from refserver.safety.manifest import list_manifests, write_manifest
from refserver.safety.restore import restore
from tests.safety.conftest import (
    add_direct,
    assert_consistent,
    ingest_pdf,
    library_state,
    synthetic_pdf,
)


@pytest.fixture
def lib(settings: Settings) -> Iterator[dict[str, Any]]:
    """A mutable holder so a test can wipe and reopen the context."""
    holder = {"ctx": AppContext(settings), "settings": settings}
    try:
        yield holder
    finally:
        holder["ctx"].close()


def wipe_and_reopen(holder: dict[str, Any]) -> AppContext:
    """The disk died: everything but the backups folder is gone."""
    settings: Settings = holder["settings"]
    holder["ctx"].close()
    for p in settings.data_dir.iterdir():
        if p.name == "backups":
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    holder["ctx"] = AppContext(settings)
    return holder["ctx"]


def check_consistency_module(ctx: AppContext) -> None:
    """If the consistency checker exists, it must report nothing after a restore."""
    try:
        import refserver.safety.consistency as consistency
    except ImportError:
        return
    for name in ("run_check", "check_and_record", "check"):
        fn = getattr(consistency, name, None)
        if callable(fn):
            report = fn(ctx)
            total = (
                report.get("total_issues")
                if isinstance(report, dict)
                else getattr(report, "total_issues", None)
            )
            if total is not None:
                assert total == 0, report
            return


def test_full_unified_roundtrip_after_the_disk_died(lib, tmp_path: Path) -> None:
    ctx = lib["ctx"]
    for i in range(3):
        ingest_pdf(ctx, synthetic_pdf(tmp_path, i, pages=2))
    before = library_state(ctx)
    m = engine_of(ctx).create("full", unified=True, description="before the crash")
    assert m.status == "completed" and m.verified, m.error
    assert m.generation == before["generation"]
    assert m.counts["papers"] == 3 and m.counts["vectors"] == 9
    assert m.embedding["model"] == "all-MiniLM-L6-v2" and m.embedding["dimension"] == 384
    assert m.schema_revision and m.schema_heads and m.app_version
    assert all(x.sha256 and x.size_raw and x.size_compressed for x in m.members)
    assert {x.role for x in m.members} >= {"sqlite", "page_hashes", "chromadb", "file"}

    ctx = wipe_and_reopen(lib)
    assert library_state(ctx)["papers"] == {}
    # listing works from the manifests alone (the new database has no backup rows)
    manifests, bad = list_manifests(lib["settings"].backups_dir / "metadata")
    assert [x.id for x in manifests] == [m.id] and not bad

    out = restore(engine_of(ctx), m.id)
    assert out["generation"] == m.generation
    after = library_state(ctx)
    assert after["papers"] == before["papers"]
    assert after["files"] == before["files"]
    assert after["vectors"] == before["vectors"]
    assert after["chroma"] == before["chroma"]
    assert after["generation"] == before["generation"]
    assert out["chroma_reconciled"] == {"upserted": 0, "deleted": 0}
    assert_consistent(ctx)
    check_consistency_module(ctx)
    # the engine re-indexed every manifest into the restored database
    assert {x.id for x in engine_of(ctx).manifests()} >= {m.id}


def test_snapshot_roundtrip_restores_the_database_and_rebuilds_chroma(lib, tmp_path: Path) -> None:
    ctx = lib["ctx"]
    for i in range(4):
        add_direct(ctx, tmp_path, i)
    engine_of(ctx).create("full")  # puts the PDFs into the backup store
    before = library_state(ctx)
    snap = engine_of(ctx).create("snapshot")
    assert snap.status == "completed" and snap.verified
    assert [x.role for x in snap.members] == ["sqlite"]
    victim = next(iter(before["papers"]))
    ctx.library.delete_paper(victim)
    add_direct(ctx, tmp_path, 99)
    assert library_state(ctx)["papers"] != before["papers"]

    out = restore(engine_of(ctx), snap.id)
    after = library_state(ctx)
    assert after["papers"] == before["papers"]
    assert after["vectors"] == before["vectors"]
    assert after["chroma"] == before["chroma"]
    assert out["safety_backup_id"]  # the state we replaced was saved first
    assert engine_of(ctx).get(out["safety_backup_id"]).safety_for == snap.id
    assert_consistent(ctx)


def _moment_between(a: Any, b: Any) -> datetime:
    """A time after backup ``a`` and before backup ``b``."""
    return datetime.fromtimestamp((a.created_ts + b.created_ts) / 2, UTC)


def test_incremental_chain_point_in_time_after_retention(lib, tmp_path: Path) -> None:
    ctx = lib["ctx"]
    engine: BackupEngine = engine_of(ctx)
    for i in range(3):
        add_direct(ctx, tmp_path, i)
    states: dict[str, dict[str, Any]] = {}
    old_snap = engine.create("snapshot", retention_days=0)
    full = engine.create("full")
    states[full.id] = library_state(ctx)
    chain = [full]
    for step in range(3):
        if step == 1:
            ctx.library.delete_paper(next(iter(states[full.id]["papers"])))
        else:
            add_direct(ctx, tmp_path, 10 + step)
        ctx.library.update_metadata(
            next(iter(library_state(ctx)["papers"])), {"title": f"edited {step}"}
        )
        inc = engine.create("incremental")
        assert inc.status == "completed", inc.error
        assert inc.parent == chain[-1].id and inc.base == full.id
        states[inc.id] = library_state(ctx)
        chain.append(inc)
    assert chain[2].files_removed  # the deleted paper's PDF left the file set

    # point in time through two deltas: newest state at or before the moment
    out = restore(engine, None, at=_moment_between(chain[2], chain[3]))
    assert out["backup_id"] == chain[2].id
    assert out["chain"] == [x.id for x in chain[:3]]
    after = library_state(ctx)
    for key in ("papers", "files", "vectors", "generation", "chroma"):
        assert after[key] == states[chain[2].id][key], key
    assert_consistent(ctx)

    # a new chain, then retention keeps one of each kind (+ what they depend on)
    add_direct(ctx, tmp_path, 50)
    full2 = engine.create("full")
    states[full2.id] = library_state(ctx)
    add_direct(ctx, tmp_path, 51)
    inc4 = engine.create("incremental")
    states[inc4.id] = library_state(ctx)
    snap = engine.create("snapshot")
    safety = {m.id for m in engine.manifests() if m.safety_for}
    plan = retention.apply(engine, retention.Policy(last=1, daily=0, weekly=0, monthly=0))
    removed = {d.backup_id for d in plan.removed}
    assert safety  # the point-in-time restore above saved the live state first
    assert removed == {old_snap.id, *(x.id for x in chain)} | safety, plan.to_dict()
    kept = {m.id for m in engine.manifests()}
    assert {full2.id, inc4.id, snap.id} <= kept and not (removed & kept)
    for name in engine.referenced_blobs():
        assert (engine.layout.root / name).exists()

    # point in time after retention: between full2 and inc4 → full2; after inc4 → inc4
    out = restore(engine, None, at=_moment_between(full2, inc4))
    assert out["backup_id"] == full2.id
    assert library_state(ctx)["papers"] == states[full2.id]["papers"]
    out = restore(engine, None, at=datetime.fromtimestamp(inc4.created_ts, UTC))
    assert out["backup_id"] == inc4.id
    after = library_state(ctx)
    for key in ("papers", "files", "vectors", "generation"):
        assert after[key] == states[inc4.id][key], key
    assert_consistent(ctx)

    # a hole in the chain is refused, not skipped over to an older state
    inc5 = engine.create("incremental")
    add_direct(ctx, tmp_path, 52)
    inc6 = engine.create("incremental")
    assert inc6.parent == inc5.id
    engine.delete(inc5.id)
    with pytest.raises(ChainGap):
        restore(engine, inc6.id)
    with pytest.raises(ChainGap):
        restore(engine, None, at=datetime.fromtimestamp(inc6.created_ts, UTC))


def test_incremental_size_grows_with_the_change_not_the_library(lib, tmp_path: Path) -> None:
    ctx = lib["ctx"]
    engine = engine_of(ctx)
    for i in range(40):
        add_direct(ctx, tmp_path, i, pages=3)
    full = engine.create("full")
    add_direct(ctx, tmp_path, 1000, pages=1)
    inc = engine.create("incremental")
    assert full.status == inc.status == "completed"
    assert len(inc.files_added) == 1
    delta = inc.members_by_role("sqlite_delta")[0]
    db = full.members_by_role("sqlite")[0]
    assert delta.size_raw < 0.25 * db.size_raw, (delta.size_raw, db.size_raw)
    assert inc.size_compressed < 0.1 * full.size_compressed, (
        inc.size_compressed,
        full.size_compressed,
    )
    assert inc.sqlite["changed_pages"] < inc.sqlite["page_count"] / 4


def test_a_chain_keeps_the_page_hash_of_its_full(lib, tmp_path: Path, monkeypatch) -> None:
    """A full taken before fingerprints became XXH3 (SHA-256 tables, no algorithm
    recorded) goes on taking incrementals that diff and restore correctly."""
    ctx = lib["ctx"]
    engine = engine_of(ctx)
    for i in range(4):
        add_direct(ctx, tmp_path, i, pages=2)
    monkeypatch.setattr(sp, "DEFAULT_PAGE_HASH", "sha256")
    old = engine.create("full")
    assert old.status == "completed", old.error
    # what a full written by the earlier release looks like: no algorithm named
    del old.sqlite["page_hash"]
    write_manifest(engine.layout.metadata, old)
    table = engine.page_table([old])
    assert len(table) == 32 * old.sqlite["page_count"]
    monkeypatch.undo()

    add_direct(ctx, tmp_path, 100, pages=1)
    inc = engine.create("incremental")
    assert inc.status == "completed", inc.error
    assert inc.base == old.id and inc.sqlite["page_hash"] == "sha256"
    assert 0 < inc.sqlite["changed_pages"] < inc.sqlite["page_count"] / 2
    want = library_state(ctx)

    new_full = engine.create("full")
    assert new_full.sqlite["page_hash"] == sp.DEFAULT_PAGE_HASH == "xxh3_128"
    assert len(engine.page_table([new_full])) == 16 * new_full.sqlite["page_count"]

    wipe_and_reopen(lib)
    restore(engine_of(lib["ctx"]), inc.id)
    after = library_state(lib["ctx"])
    for key in ("papers", "files", "vectors", "generation"):
        assert after[key] == want[key], key
    assert_consistent(lib["ctx"])


def test_retention_never_removes_the_newest_verified_full_and_dry_run_changes_nothing(
    lib, tmp_path: Path
) -> None:
    ctx = lib["ctx"]
    engine = engine_of(ctx)
    add_direct(ctx, tmp_path, 1)
    old = engine.create("full", retention_days=0)
    add_direct(ctx, tmp_path, 2)
    newest = engine.create("full", retention_days=0)  # expired by days, but the newest full
    inc = engine.create("incremental", retention_days=30)
    ctx.library.delete_paper(next(iter(library_state(ctx)["papers"])))
    assert engine.create("full", description="after a delete").status == "completed"
    broken = engine.create("snapshot")
    broken.status = "failed"
    from refserver.safety.manifest import write_manifest

    write_manifest(engine.layout.metadata, broken)
    newest_full = max(
        (m for m in engine.manifests() if m.kind == "full"), key=lambda m: m.created_ts
    )
    ids_before = {m.id for m in engine.manifests()}
    dry = retention.apply(
        engine, retention.Policy(last=0, daily=0, weekly=0, monthly=0), dry_run=True
    )
    assert {m.id for m in engine.manifests()} == ids_before  # nothing deleted
    would = {d.backup_id for d in dry.removed}
    assert dry.to_dict()["would_remove"] == [d.backup_id for d in dry.removed]
    assert newest_full.id not in would and broken.id in would and old.id in would
    assert inc.id not in would and newest.id not in would  # inc is within its 30 days; needs newest
    real = retention.apply(engine, retention.Policy(last=0, daily=0, weekly=0, monthly=0))
    assert {d.backup_id for d in real.removed} == would
    assert real.removed_files == dry.removed_files
    left = {m.id for m in engine.manifests()}
    assert left == ids_before - would
    for name in engine.referenced_blobs():
        assert (engine.layout.root / name).exists()
    # whatever is left still verifies
    assert engine.verify(inc.id).ok
