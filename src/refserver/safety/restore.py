"""Restore: by a listed backup id only, rebuilt and verified aside, then swapped in atomically.

Order of a live restore (a crash at any step leaves the old or the new truth,
never a mix):

1. Rebuild the backup's chain (base + deltas) into a staging folder on the same
   filesystem, checking every member's SHA-256, the SHA-256 of the rebuilt
   image, ``PRAGMA integrity_check``, generation, counts and schema revision,
   the PDFs' hashes and the ChromaDB copy (opened in a child process).
   Nothing live has been touched if any of this fails.
2. Refuse writes (``db.paused_writes()`` → 503), take a safety backup of the live
   data, move the missing PDFs in (harmless extra files if we crash here).
3. Checkpoint the live WAL to empty and ``rename`` the new database over the old
   one (one atomic step), fsync the folder. Then swap the Chroma folder.
4. Reconcile ChromaDB with the SQLite vectors, drop PDFs the restored database
   does not reference, rebuild the ``backups`` index from the manifests.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from refserver.safety import sqlite_pages as sp
from refserver.safety.archive import decompress_file, extract_tar, read_member
from refserver.safety.backup import BackupEngine, BackupError, ChainGap
from refserver.safety.manifest import Manifest, ManifestError, Member
from refserver.safety.verify import VerificationFailed, VerifyResult, check_chroma
from refserver.storage.db import MIGRATIONS_DIR
from refserver.storage.files import fsync_dir, sha256_file
from refserver.storage.library import upsert_rows
from refserver.storage.models import Job, Paper, Vector
from refserver.storage.vectors import PAGES, PAPERS, VectorIndex

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]
CHROMA_TOP = ("chroma.sqlite3",)  # plus one folder per collection (uuid names)


class NotFound(LookupError):
    """No listed backup with this id (→ 404)."""


class TargetRefused(ValueError):
    """A restore target outside the restore area, or not empty (→ 400)."""


@dataclass
class Materialized:
    root: Path
    db: Path
    chroma: Path | None
    files: Path | None
    chain: list[Manifest]
    info: dict[str, Any] = field(default_factory=dict)


def _noop(_s: str, _f: float) -> None:
    return None


def known_revisions() -> tuple[set[str], set[str]]:
    """(every revision this code knows, its heads) from the Alembic scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    sd = ScriptDirectory.from_config(cfg)
    return {r.revision for r in sd.walk_revisions()}, set(sd.get_heads())


def parse_at(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip().replace("Z", "+00:00")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            try:
                dt = datetime.fromtimestamp(float(text), UTC)
            except ValueError:
                raise ValueError(f"not a timestamp: {value!r} (use ISO 8601)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def resolve(engine: BackupEngine, backup_id: str | None, at: datetime | None) -> Manifest:
    """The backup to restore: by id, or the newest state at or before ``at``."""
    anchor: Manifest | None = None
    if backup_id:
        try:
            anchor = engine.get(backup_id)
        except ManifestError as exc:
            raise NotFound(f"no backup {backup_id}") from exc
    if at is None:
        if anchor is None:
            raise NotFound("give a backup id (or a time with at=)")
        if anchor.kind == "incremental":
            engine.chain(anchor)  # a gap refuses the restore (ChainGap → 409)
        return anchor
    cutoff = at.timestamp()
    lineage = None
    if anchor is not None:
        lineage = anchor.base or (anchor.id if anchor.kind == "full" else None)
    candidates = [
        m
        for m in engine.manifests()
        if m.kind in ("full", "incremental")
        and m.status == "completed"
        and m.created_ts <= cutoff
        and (lineage is None or (m.base or m.id) == lineage)
    ]
    if not candidates:
        raise NotFound(f"no completed backup at or before {at.isoformat()}")
    target = candidates[-1]
    engine.chain(target)  # refuse (ChainGap) rather than fall back to an older state
    return target


def confine_target(restore_dir: Path, target_path: str) -> Path:
    """A folder under the restore area, or :class:`TargetRefused`."""
    base = restore_dir.resolve()
    raw = Path(target_path)
    if "\x00" in target_path or not target_path.strip():
        raise TargetRefused("target_path is empty or invalid")
    candidate = raw if raw.is_absolute() else base / raw
    resolved = candidate.resolve(strict=False)
    if resolved == base or base not in resolved.parents:
        raise TargetRefused(f"target_path must be a new folder under {base}")
    if resolved.exists() and (not resolved.is_dir() or any(resolved.iterdir())):
        raise TargetRefused(f"target_path {resolved} exists and is not empty")
    return resolved


# --- rebuilding a backup in a folder ---------------------------------------------------------


def materialize(
    engine: BackupEngine,
    m: Manifest,
    dest: Path,
    result: VerifyResult,
    *,
    files: bool = True,
    chroma_from_base: bool = False,
    progress: ProgressFn = _noop,
) -> Materialized:
    """Rebuild ``m`` (its whole chain) in ``dest`` and verify it; raises on any failure."""
    root = engine.layout.root

    def fail(name: str, detail: str) -> None:
        result.add(name, False, detail)
        raise VerificationFailed(result)

    try:
        chain = engine.chain(m) if m.kind == "incremental" else [m]
    except ChainGap as exc:
        fail("chain", str(exc))
    result.add("chain", True, " → ".join(x.id for x in chain))
    if any(x.status != "completed" for x in chain):
        fail("status", f"backup {m.id} is {m.status}")

    known, _heads = known_revisions()
    unknown = [h for h in m.schema_heads if h not in known]
    if unknown or (m.schema_revision and m.schema_revision not in known):
        fail(
            "schema",
            f"backup is from another schema revision ({', '.join(unknown or [str(m.schema_revision)])}) "
            "that this RefServer does not know",
        )
    result.add("schema", True, ",".join(m.schema_heads))

    dest.mkdir(parents=True, exist_ok=True)
    db = dest / "refserver.db"
    progress("sqlite", 0.05)
    base = chain[0]
    main = base.members_by_role("sqlite")
    if not main:
        fail("sqlite", f"backup {base.id} has no database member")
    mem = main[0]
    path = root / mem.name
    if not path.is_file():
        fail(f"member:{mem.name}", "missing")
    try:
        r = decompress_file(path, db, mem.compression)
    except Exception as exc:
        fail(f"member:{mem.name}", f"unreadable: {exc}")
    if (
        r.sha256 != mem.sha256
        or r.size_raw != mem.size_raw
        or (mem.sha256_stored and r.sha256_stored != mem.sha256_stored)
    ):
        fail(f"member:{mem.name}", "checksum differs")
    result.add(f"member:{mem.name}", True, f"{mem.size_raw} bytes")
    for inc in chain[1:]:
        dm = inc.members_by_role("sqlite_delta")
        if not dm or not (root / dm[0].name).is_file():
            fail("chain", f"chain gap: the page delta of {inc.id} is missing")
        buf = io.BytesIO()
        try:
            rd = read_member(root / dm[0].name, dm[0].compression, buf)
        except Exception as exc:
            fail(f"member:{dm[0].name}", f"unreadable: {exc}")
        if rd.sha256 != dm[0].sha256 or (
            dm[0].sha256_stored and rd.sha256_stored != dm[0].sha256_stored
        ):
            fail(f"member:{dm[0].name}", "checksum differs")
        buf.seek(0)
        try:
            sp.apply_delta(db, buf)
        except sp.DeltaError as exc:
            fail(f"member:{dm[0].name}", str(exc))
        result.add(f"member:{dm[0].name}", True, f"{dm[0].size_raw} bytes")
    progress("checking", 0.35)
    image_sha = sha256_file(db) if len(chain) > 1 else r.sha256
    if image_sha != m.sqlite.get("db_sha256"):
        fail("sqlite:image", "the rebuilt database differs from the one backed up")
    result.add("sqlite:image", True, "SHA-256 of the rebuilt database matches")
    ok, pragma, msg = sp.check_database(db)
    if not ok:
        fail(f"sqlite:{pragma}", msg)
    result.add(f"sqlite:{pragma}", True, msg)
    info = sp.describe(db)
    if info["generation"] != m.generation:
        fail("generation", f"{info['generation']} != {m.generation}")
    if info["schema_heads"] != m.schema_heads:
        fail("schema", f"database says {info['schema_heads']}, manifest {m.schema_heads}")
    wrong = {
        k: (info["counts"].get(k), v) for k, v in m.counts.items() if info["counts"].get(k) != v
    }
    if wrong:
        fail("counts", ", ".join(f"{k}: {a} != {b}" for k, (a, b) in wrong.items()))
    result.add("counts", True, ", ".join(f"{k}={v}" for k, v in sorted(m.counts.items())))

    chroma: Path | None = None
    cm = m.members_by_role("chromadb")
    chroma_counts = m.chroma.get("counts", {})
    if not cm and chroma_from_base and chain[0].members_by_role("chromadb"):
        # An incremental holds no Chroma copy: start from its base's copy; the live
        # restore then reconciles the difference from the SQLite vectors.
        cm = chain[0].members_by_role("chromadb")
        chroma_counts = chain[0].chroma.get("counts", {})
    if cm:
        progress("chromadb", 0.5)
        chroma = dest / "chroma"
        p = root / cm[0].name
        if not p.is_file():
            fail(f"member:{cm[0].name}", "missing")
        try:
            rc = extract_tar(p, chroma, cm[0].compression)
        except Exception as exc:
            fail(f"member:{cm[0].name}", f"unsafe or unreadable: {exc}")
        if rc.sha256 != cm[0].sha256:
            fail(f"member:{cm[0].name}", "checksum differs")
        result.add(f"member:{cm[0].name}", True, f"{cm[0].size_raw} bytes")
        c = check_chroma(chroma, chroma_counts)
        result.checks.append(c)
        if not c.ok:
            raise VerificationFailed(result)

    files_dir: Path | None = None
    if files:
        progress("files", 0.6)
        files_dir = dest / "files"
        if m.kind == "snapshot":
            # A snapshot holds the database alone: its PDFs come from the backup
            # store (any backup) or, failing that, the live store, checked by hash.
            have = {}
            for sha in info["file_hashes"]:
                blob = engine.layout.existing_blob(sha)
                if blob:
                    have[sha] = Member(blob[0], "file", 0, 0, sha, blob[1])
            live = [s for s in info["file_hashes"] if s not in have]
        else:
            have = engine.file_set(chain)
            live = []
        lost = set(m.files_missing) - set(have) - set(live)
        missing = sorted(info["file_hashes"] - set(have) - set(live) - lost)
        if missing:
            fail("files", f"{len(missing)} PDF(s) the database needs are not in the backup")
        bad: list[str] = []
        for sha in live:
            src = engine.ctx.files.path_for(sha)
            out = files_dir / sha[:2] / f"{sha}.pdf"
            if not src.is_file():
                bad.append(f"{sha[:12]} is in no backup and not in the live store")
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            if sha256_file(out) != sha:
                bad.append(f"{sha[:12]} (live copy) checksum differs")
        for i, sha in enumerate(sorted(have)):
            fm = have[sha]
            src = root / fm.name
            out = files_dir / sha[:2] / f"{sha}.pdf"
            if not src.is_file():
                bad.append(f"{sha[:12]} missing")
                continue
            try:
                rf = decompress_file(src, out, fm.compression)
            except Exception as exc:
                bad.append(f"{sha[:12]} unreadable: {exc}")
                continue
            if rf.sha256 != sha:
                bad.append(f"{sha[:12]} checksum differs")
            if i % 50 == 0:
                progress("files", 0.6 + 0.3 * i / max(len(have), 1))
        if bad:
            fail("files", "; ".join(bad[:10]))
        detail = f"{len(have) + len(live)} PDF(s) checked"
        if lost & info["file_hashes"]:
            # Nothing to restore them from; the rest of the library must still come back.
            detail += (
                f"; {len(lost & info['file_hashes'])} PDF(s) were already missing from the "
                "live store when the backup was taken (see the manifest's files_missing)"
            )
        result.add("files", True, detail)
    progress("verified", 0.9)
    return Materialized(dest, db, chroma, files_dir, chain, info)


# --- restoring ----------------------------------------------------------------------------------


def restore(
    engine: BackupEngine,
    backup_id: str | None,
    *,
    at: str | datetime | None = None,
    target_path: str | None = None,
    progress: ProgressFn = _noop,
    username: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Restore a listed backup into the live library, or into a folder under the restore area."""
    ctx = engine.ctx
    settings = ctx.settings
    when = parse_at(at)
    target = confine_target(settings.restore_dir, target_path) if target_path else None
    started = time.monotonic()
    wall_started = time.time()
    with engine.lock:
        m = resolve(engine, backup_id, when)
        result = VerifyResult(m.id)
        if target is not None:
            partial = target.parent / f".partial-{target.name}"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                mat = materialize(engine, m, partial, result, progress=progress)
                if mat.files is None:
                    (partial / "files").mkdir(exist_ok=True)
                if target.exists():
                    target.rmdir()
                os.replace(partial, target)
                fsync_dir(target.parent)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
            return _summary(m, mat, result, started, target=str(target))

        staging = settings.data_dir / f".restore-staging-{m.id}"
        shutil.rmtree(staging, ignore_errors=True)
        timings: dict[str, float] = {}
        t_last = [time.monotonic()]

        def mark(stage: str) -> None:
            now = time.monotonic()
            timings[stage] = round(now - t_last[0], 3)
            t_last[0] = now

        try:
            mat = materialize(engine, m, staging, result, progress=progress, chroma_from_base=True)
            mark("rebuild and verify")
            live_db = settings.sqlite_path
            safety_id: str | None = None
            with ctx.db.paused_writes():
                if live_db.exists() and not force:
                    progress("safety backup", 0.92)
                    safety = engine.create(
                        "full",
                        description=f"safety backup before restoring {m.id}",
                        safety_for=m.id,
                    )
                    if safety.status != "completed":
                        raise BackupError(
                            f"the safety backup failed ({safety.error}); nothing was restored"
                        )
                    safety_id = safety.id
                    mark("safety backup")
                progress("swapping", 0.95)
                # Writers already get 503; holding the barrier also keeps Chroma
                # repairs of other threads (they take it) off the stores mid-swap.
                with ctx.db.barrier():
                    _swap(engine, mat, wall_started)
                    mark("swap")
                    progress("reconciling", 0.97)
                    reconciled = reconcile_chroma(ctx)
                    mark("reconcile chroma")
            engine.sync_records()
            _close_interrupted_jobs(ctx)
            mark("index")
            out = _summary(m, mat, result, started)
            out.update(
                {"safety_backup_id": safety_id, "chroma_reconciled": reconciled, "timings": timings}
            )
            ctx.audit("backup.restore", username=username, target=m.id, detail=out)
            return out
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _summary(
    m: Manifest, mat: Materialized, result: VerifyResult, started: float, target: str | None = None
) -> dict[str, Any]:
    return {
        "backup_id": m.id,
        "restored_backup_id": m.id,
        "type": m.kind,
        "chain": [x.id for x in mat.chain],
        "generation": m.generation,
        "counts": dict(m.counts),
        "target_path": target,
        "status": "completed",
        "checks": [c.__dict__ for c in result.checks],
        "duration_seconds": round(time.monotonic() - started, 3),
    }


def _swap(engine: BackupEngine, mat: Materialized, started: float) -> None:
    """Put the verified copy in place. Callers hold ``paused_writes``."""
    ctx = engine.ctx
    settings = ctx.settings
    live_db = settings.sqlite_path
    files_root = settings.files_dir
    # PDFs an ingest still in flight has stored but not yet recorded must survive
    # the clean-up below: those of unfinished jobs, and any stored since we began.
    in_flight: set[str] = set()
    try:
        with ctx.db.read() as s:
            in_flight = {
                h
                for h in s.execute(
                    select(Job.file_sha256).where(Job.status.in_(("queued", "processing")))
                ).scalars()
                if h
            }
    except Exception:  # a damaged live database has nothing to protect
        log.info("could not read unfinished jobs before the swap", exc_info=True)
    # 1. PDFs first: extra files are harmless if we stop here.
    if mat.files is not None:
        # The staged copies were verified; a rename replaces a live copy cheaply
        # (and repairs one that rotted), so live copies need not be re-hashed.
        touched: set[Path] = set()
        for src in sorted(mat.files.glob("*/*.pdf")):
            dest = files_root / src.parent.name / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(src, 0o444)
            os.replace(src, dest)
            touched.add(dest.parent)
        for folder in touched:
            fsync_dir(folder)
    # 2. The database: one rename over a checkpointed (empty-WAL) live file.
    if ctx.vectors is not None:
        ctx.vectors.close()
    ctx.db.engine.dispose()
    if live_db.exists():
        conn = sqlite3.connect(str(live_db), timeout=30)
        try:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise BackupError("the live database is busy; nothing was swapped, try again")
        finally:
            conn.close()
    with open(mat.db, "rb+") as f:
        os.fsync(f.fileno())
    live_db.parent.mkdir(parents=True, exist_ok=True)
    os.replace(mat.db, live_db)
    for suffix in ("-wal", "-shm"):
        Path(str(live_db) + suffix).unlink(missing_ok=True)
    fsync_dir(live_db.parent)
    # 3. ChromaDB: an index; if we stop here it is reconciled from SQLite later.
    if not settings.chroma_host and settings.chroma_path is not None:
        live_chroma = settings.chroma_path
        old = live_chroma.parent / f".{live_chroma.name}-before-restore"
        shutil.rmtree(old, ignore_errors=True)
        if live_chroma.exists():
            os.replace(live_chroma, old)
        if mat.chroma is not None:
            os.replace(mat.chroma, live_chroma)
        else:
            live_chroma.mkdir(parents=True)
        fsync_dir(live_chroma.parent)
        shutil.rmtree(old, ignore_errors=True)
    if ctx.vectors is not None:
        ctx.vectors = VectorIndex(
            settings.chroma_path,
            host=settings.chroma_host,
            port=settings.chroma_port,
            hnsw=dict(ctx.vectors.hnsw),
        )
        ctx.library.vectors = ctx.vectors
    # 4. An older backup of a schema this code knows is brought up to date.
    _known, heads = known_revisions()
    if set(mat.info.get("schema_heads", [])) != heads:
        ctx.db.migrate()
    # 5. PDFs the restored database does not reference are no longer the library's.
    if mat.files is not None:
        with ctx.db.read() as s:
            wanted = set(s.execute(select(Paper.file_sha256).distinct()).scalars())
        for sha, path in list(ctx.files.iter_files()):
            if sha in wanted or sha in in_flight:
                continue
            try:
                if path.stat().st_mtime >= started:
                    continue
            except FileNotFoundError:
                continue
            path.unlink(missing_ok=True)


def _have_meta(meta: dict[str, Any] | None) -> tuple[Any, ...]:
    m = meta or {}
    return (
        m.get("checksum"),
        m.get("generation"),
        m.get("title", ""),
        m.get("year"),
        m.get("paper_id"),
        m.get("doc_id"),
    )


def reconcile_chroma(ctx: Any, batch: int = 2000) -> dict[str, int]:
    """Make ChromaDB hold exactly the SQLite vectors (ids, checksums, metadata)."""
    vectors: VectorIndex | None = ctx.vectors
    if vectors is None:
        return {"upserted": 0, "deleted": 0}
    upserted = deleted = 0
    for kind, name in (("page", PAGES), ("paper", PAPERS)):
        have: dict[str, tuple[Any, ...]] = {}
        for ids, res in vectors.iter_entries(name, include=("metadatas",)):
            for i, meta in zip(ids, res["metadatas"], strict=False):
                have[i] = _have_meta(meta)
        todo: list[str] = []
        want: set[str] = set()
        with ctx.db.read() as s:
            rows = s.execute(
                select(
                    Vector.chroma_id,
                    Vector.checksum,
                    Vector.generation,
                    Paper.title,
                    Paper.year,
                    Paper.id,
                    Paper.doc_id,
                )
                .join(Paper, Paper.id == Vector.paper_id)
                .where(Vector.kind == kind)
            ).all()
        for cid, chk, gen, title, year, pid, doc in rows:
            want.add(cid)
            expected = (chk, gen, (title or "")[:500], year if year is not None else -1, pid, doc)
            if have.get(cid) != expected:
                todo.append(cid)
        extra = [i for i in have if i not in want]
        if extra:
            vectors.delete(name, ids=extra)
            deleted += len(extra)
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            with ctx.db.read() as s:
                pairs = s.execute(
                    select(Vector, Paper)
                    .join(Paper, Paper.id == Vector.paper_id)
                    .where(Vector.chroma_id.in_(chunk))
                ).all()
                if not pairs:  # deleted since the comparison
                    continue
                upsert_rows(vectors, name, pairs)
            upserted += len(pairs)
    return {"upserted": upserted, "deleted": deleted}


def _close_interrupted_jobs(ctx: Any) -> None:
    """Backup/restore jobs the restored database shows as running never will finish."""
    with ctx.db.write(bump=False) as s:
        s.execute(
            update(Job)
            .where(Job.kind.in_(("backup", "restore")), Job.status.in_(("queued", "processing")))
            .values(
                status="failed",
                error_message="interrupted: the library was restored from a backup",
                finished_at=datetime.now(UTC),
            )
        )
