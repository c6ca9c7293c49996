"""Backups: snapshot, full and incremental, consistent across SQLite, ChromaDB and files.

Layout under ``<data>/backups`` (DESIGN.md §5, §6)::

    sqlite/snapshots/<id>.db.zst       snapshot: the database alone
    sqlite/daily|weekly/<id>.db.zst    full: database image (+ <id>.pagehashes)
    sqlite/incremental/<id>.delta.zst  incremental: changed pages since the parent
    chromadb/<id>.tar.zst              full: the Chroma folder, copied at the barrier
    files/<sha[:2]>/<sha>.pdf.zst      every PDF once across all backups
    metadata/<id>.json                 the manifest (authoritative)

The consistent point: the single writer is held (``db.barrier()``) only while a
read transaction is opened on the live database, the Chroma folder is copied
(full) and the PDFs the snapshot needs but no backup holds yet are hard-linked
aside. Everything slow — paging the database out, hashing, compressing,
verifying — runs after the barrier is released, against that read transaction.
Readers are never blocked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, select

from refserver.safety import sqlite_pages as sp
from refserver.safety.archive import (
    DEFAULT_LEVEL,
    SUFFIX,
    compress_file,
    copy_file,
    open_reader,
    read_member,
    tar_folder,
    worth_compressing,
    write_stream,
)
from refserver.safety.heap import long_lived_frozen
from refserver.safety.manifest import (
    KINDS,
    Manifest,
    ManifestError,
    Member,
    list_manifests,
    new_id,
    now_iso,
    read_manifest,
    write_manifest,
)
from refserver.safety.verify import (
    Check,
    VerifyResult,
    check_chroma,
)
from refserver.storage.db import WritesPaused
from refserver.storage.files import fsync_dir, sha256_file
from refserver.storage.models import BackupRecord
from refserver.storage.vectors import COLLECTIONS

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]
FILE_THREADS = 4  # PDFs stored at once during a backup (syscall-bound, measured best)
TIERS = ("daily", "weekly", "incremental", "snapshots")
BLOB_ORDER = ("zstd", "gzip", "none")  # which stored copy of a PDF counts, if there are two


class BackupError(RuntimeError):
    """A backup cannot be taken as asked (bad input or no base to build on)."""


class ChainGap(BackupError):
    """A backup's chain misses a member or a parent: it cannot be restored."""


class Cancelled(BackupError):
    """The job running the backup was cancelled."""


@dataclass
class Layout:
    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def chromadb(self) -> Path:
        return self.root / "chromadb"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    def sqlite(self, tier: str) -> Path:
        return self.root / "sqlite" / tier

    def ensure(self) -> None:
        for tier in TIERS:
            self.sqlite(tier).mkdir(parents=True, exist_ok=True)
        for d in (self.metadata, self.files, self.chromadb, self.staging):
            d.mkdir(parents=True, exist_ok=True)

    def blob_name(self, sha: str, compression: str) -> str:
        return f"files/{sha[:2]}/{sha}.pdf{SUFFIX[compression]}"

    def stored_blobs(self) -> dict[str, tuple[str, str]]:
        """sha → (relative name, compression) of every stored PDF, from one folder scan.

        Under the barrier a stat per name and compression (three per PDF) of a
        new library's thousands of PDFs was most of the writer's wait.
        """
        by_suffix = {f".pdf{SUFFIX[c]}": c for c in BLOB_ORDER}
        out: dict[str, tuple[str, str]] = {}
        if not self.files.is_dir():
            return out
        for sub in os.scandir(self.files):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                sha, dot, rest = entry.name.partition(".")
                comp = by_suffix.get(dot + rest)
                if comp is None or entry.name.startswith(".part-"):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                prior = out.get(sha)
                if prior is None or BLOB_ORDER.index(comp) < BLOB_ORDER.index(prior[1]):
                    out[sha] = (f"files/{sub.name}/{entry.name}", comp)
        return out

    def existing_blob(self, sha: str) -> tuple[str, str] | None:
        """(relative name, compression) of a stored PDF, whatever its compression."""
        for comp in BLOB_ORDER:
            name = self.blob_name(sha, comp)
            if (self.root / name).is_file():
                return name, comp
        return None


def _noop(_stage: str, _fraction: float) -> None:
    return None


class BackupEngine:
    """Takes, lists, verifies and deletes backups of one :class:`AppContext`."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.layout = Layout(self.settings.backups_dir)
        self.layout.ensure()
        self.lock = threading.RLock()  # one backup/restore/prune at a time per process
        self._pool: ThreadPoolExecutor | None = None  # checks of the backup being taken

    # --- listing ---------------------------------------------------------------------
    def manifests(self) -> list[Manifest]:
        return list_manifests(self.layout.metadata)[0]

    def get(self, backup_id: str) -> Manifest:
        return read_manifest(self.layout.metadata, backup_id)

    def exists(self, backup_id: str) -> bool:
        try:
            self.get(backup_id)
        except ManifestError:
            return False
        return True

    # --- chains -------------------------------------------------------------------------
    def chain(self, manifest: Manifest) -> list[Manifest]:
        """Base full first, ``manifest`` last; :class:`ChainGap` if a link is missing."""
        out = [manifest]
        seen = {manifest.id}
        cur = manifest
        while cur.kind == "incremental":
            if not cur.parent:
                raise ChainGap(f"incremental {cur.id} names no parent")
            try:
                parent = self.get(cur.parent)
            except ManifestError as exc:
                raise ChainGap(
                    f"chain gap: parent {cur.parent} of {cur.id} is gone ({exc})"
                ) from exc
            if parent.id in seen:
                raise ChainGap(f"chain of {manifest.id} loops at {parent.id}")
            if parent.status != "completed":
                raise ChainGap(f"chain gap: parent {parent.id} is {parent.status}")
            seen.add(parent.id)
            out.append(parent)
            cur = parent
        if cur.kind != "full":
            raise ChainGap(f"chain of {manifest.id} does not start at a full backup")
        out.reverse()
        return out

    def file_set(self, chain: list[Manifest]) -> dict[str, Member]:
        """The PDFs (sha → member) the last backup of ``chain`` holds."""
        files = {m.sha256: m for m in chain[0].members_by_role("file")}
        for inc in chain[1:]:
            for sha in inc.files_removed:
                files.pop(sha, None)
            for m in inc.members_by_role("file"):
                files[m.sha256] = m
        return files

    def page_table(self, chain: list[Manifest]) -> bytearray:
        """Page hashes of the last image of ``chain`` (base table patched by each delta)."""
        base = chain[0]
        hashes = base.members_by_role("page_hashes")
        if not hashes:
            raise ChainGap(f"full {base.id} has no page table")
        import io

        buf = io.BytesIO()
        r = read_member(self.layout.root / hashes[0].name, hashes[0].compression, buf)
        if r.sha256 != hashes[0].sha256:
            raise ChainGap(f"page table of {base.id} is damaged")
        table = bytearray(buf.getvalue())
        algo = self.page_hash_of(chain)
        for inc in chain[1:]:
            d = inc.members_by_role("sqlite_delta")[0]
            with open_reader(self.layout.root / d.name, d.compression) as stream:
                sp.patch_table(table, stream, algo)
        return table

    @staticmethod
    def page_hash_of(chain: list[Manifest]) -> sp.PageHash:
        """The fingerprint of a chain's page tables: chosen by its full, kept by its incrementals."""
        return sp.page_hash((chain[0].sqlite or {}).get("page_hash"))

    def latest_head(self) -> Manifest | None:
        """The newest completed full or incremental: the parent of the next incremental."""
        for m in reversed(self.manifests()):
            if m.kind in ("full", "incremental") and m.status == "completed" and m.verified:
                return m
        return None

    # --- creating ------------------------------------------------------------------------
    def allocate(self, kind: str) -> str:
        if kind not in KINDS:
            raise BackupError(f"backup_type must be one of {', '.join(KINDS)}")
        return new_id(kind, self.layout.metadata)

    def create(
        self,
        kind: str = "full",
        *,
        compress: bool = True,
        description: str = "",
        retention_days: int | None = None,
        unified: bool = False,
        tier: str | None = None,
        backup_id: str | None = None,
        progress: ProgressFn | None = None,
        cancelled: Callable[[], bool] | None = None,
        safety_for: str | None = None,
    ) -> Manifest:
        """Take one backup; returns its manifest (status completed or failed)."""
        if kind not in KINDS:
            raise BackupError(f"backup_type must be one of {', '.join(KINDS)}")
        if unified and kind == "snapshot":
            raise BackupError("a unified backup covers every store: use full or incremental")
        if not self.settings.is_sqlite:
            raise BackupError("backups need the SQLite deployment (database_url is not SQLite)")
        if retention_days is not None and retention_days < 0:
            raise BackupError("retention_days must be zero or more")
        tier = (
            tier or {"snapshot": "snapshots", "full": "daily", "incremental": "incremental"}[kind]
        )
        if tier not in TIERS:
            raise BackupError(f"tier must be one of {', '.join(TIERS)}")
        progress = progress or _noop
        if kind == "full" and not self.settings.chroma_host:
            from refserver.safety.chroma_probe import warm_up

            warm_up()  # no-op once the scheduler started it; else it starts beside the barrier
        with self.lock:
            parent_chain: list[Manifest] = []
            if kind == "incremental":
                head = self.latest_head()
                if head is None:
                    raise BackupError("no verified full backup to base an incremental on")
                parent_chain = self.chain(head)
            compression = self.settings.backup_compression if compress else "none"
            now = datetime.now(UTC)
            m = Manifest(
                id=backup_id or new_id(kind, self.layout.metadata, now),
                kind=kind,
                created=now.isoformat(),
                created_ts=now.timestamp(),
                unified=unified,
                tier=tier,
                compression=compression,
                compression_level=(  # recorded explicitly, whatever the default is
                    (self.settings.backup_compression_level or DEFAULT_LEVEL[compression])
                    if compression != "none"
                    else None
                ),
                description=description or "",
                retention_days=retention_days,
                app_version=self.ctx.version,
                safety_for=safety_for,
            )
            if parent_chain:
                m.parent = parent_chain[-1].id
                m.base = parent_chain[0].id
                m.chain_depth = len(parent_chain)
            write_manifest(self.layout.metadata, m)
            self.record(m)
            started = time.monotonic()
            staging = self.layout.staging / m.id
            written: list[Path] = []
            try:
                with long_lived_frozen():  # no 100 ms GIL-holding full GC mid-backup
                    self._take(
                        m, parent_chain, staging, written, progress, cancelled or (lambda: False)
                    )
            except Exception as exc:
                log.exception("backup %s failed", m.id)
                m.status = "failed"
                m.verified = False
                m.error = str(exc) or type(exc).__name__
                for path in written:
                    path.unlink(missing_ok=True)
                m.members = [x for x in m.members if x.role == "file"]
            finally:
                pool = getattr(self, "_pool", None)
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    self._pool = None
                shutil.rmtree(staging, ignore_errors=True)
                m.duration_seconds = round(time.monotonic() - started, 3)
                write_manifest(self.layout.metadata, m)
                self.record(m)
            progress("done", 1.0)
            return m

    def _take(
        self,
        m: Manifest,
        parent_chain: list[Manifest],
        staging: Path,
        written: list[Path],
        progress: ProgressFn,
        cancelled: Callable[[], bool],
    ) -> None:
        """Consistent point, then the stores side by side, then verification.

        After the barrier three things run at once on two cores: the database
        (compressed and page-hashed on this thread; zstd has its own workers), the
        PDFs (a few I/O threads: create + fsync dominate) and the Chroma tar, while
        the checks of the database and of the Chroma copy run in the check pool.
        """
        ctx = self.ctx
        staging.mkdir(parents=True, exist_ok=True)
        comp = m.compression
        level = m.compression_level
        timings: dict[str, float] = {}
        last = [time.monotonic()]

        def mark(stage: str) -> None:
            now = time.monotonic()
            timings[stage] = round(now - last[0], 3)
            last[0] = now

        # Checks of the staged copies run beside the rest (SQLite and the child
        # process do not hold the GIL): quick/integrity check, Chroma opened.
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="backup-verify")
        self._pool = pool
        io_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="backup-io")
        src = sp.SourceSnapshot(self.settings.sqlite_path)
        fut_db: Future | None = None
        try:
            chroma_copy: Path | None = None
            linked: dict[str, Path] = {}
            chroma_counts: dict[str, int] = {}
            progress("consistent point", 0.01)
            if m.kind == "full" and ctx.vectors is not None and not self.settings.chroma_host:
                # Chroma loads a collection (and applies its pending log) on first
                # use in a process: make that happen here, not inside the barrier.
                for name in COLLECTIONS:
                    ctx.vectors.count(name)
            src.settle()
            # Only backups add PDFs to the store, one at a time (self.lock): scan it now.
            stored = self.layout.stored_blobs() if m.kind != "snapshot" else {}
            t0 = time.monotonic()
            with ctx.db.barrier():
                generation = src.begin_frozen()
                if m.kind != "snapshot":
                    hashes = {
                        r[0] for r in src.conn.execute("SELECT DISTINCT file_sha256 FROM papers")
                    }
                    linked = self._stage_new_files(hashes, staging / "files", m, stored)
                    if m.kind == "full":
                        chroma_copy, chroma_counts = self._copy_chroma(staging / "chroma", m)
            m.barrier_ms = round((time.monotonic() - t0) * 1000, 2)
            mark("barrier")
            cap = src.capture(generation)
            m.generation = cap.generation
            m.counts = cap.counts
            m.schema_heads = cap.schema_heads
            m.schema_revision = ctx.db.schema_revision()
            m.embedding = src.embedding()
            vec_kinds = dict(
                src.conn.execute("SELECT kind, count(*) FROM vectors GROUP BY kind").fetchall()
            )
            files_fut = (
                io_pool.submit(self._store_files, m, linked, cap.file_hashes, parent_chain, comp)
                if m.kind != "snapshot"
                else None
            )
            chroma_fut = (
                io_pool.submit(self._store_chroma, m, chroma_copy, comp)
                if chroma_copy is not None
                else None
            )
            # The staged Chroma folder is this backup's own scratch copy: once its tar
            # is written, the check opens it where it is (no second copy to make).
            fut_chroma = (
                pool.submit(self._check_staged_chroma, chroma_fut, chroma_copy, chroma_counts)
                if chroma_fut is not None and chroma_copy is not None
                else None
            )
            progress("sqlite", 0.05)
            if src.frozen:
                image, limit = self.settings.sqlite_path, src.image_size()
                fut_db = pool.submit(src.quick_check)
                timings["snapshot"] = 0.0  # read in place: the file is frozen
            else:
                image, limit = staging / "snapshot.db", None
                src.backup_to(
                    image,
                    lambda done, total: progress("sqlite", 0.05 + 0.35 * done / max(total, 1)),
                )
                src.close()  # release the read transaction early
                fut_db = pool.submit(sp.check_database, image)
                mark("snapshot")
            if cancelled():
                raise Cancelled("cancelled")

            progress("hashing", 0.4)
            page_size = sp.page_size_of(image)
            db_size = limit if limit is not None else image.stat().st_size
            tier_dir = self.layout.sqlite(m.tier)
            table = bytearray()
            db_sha = ""
            algo = (
                self.page_hash_of(parent_chain)
                if parent_chain
                else sp.page_hash(sp.DEFAULT_PAGE_HASH)
            )
            if m.kind in ("snapshot", "full"):
                dest = tier_dir / f"{m.id}.db{SUFFIX[comp]}"
                written.append(dest)
                done = [0]

                def tick(n: int) -> None:
                    done[0] += n
                    progress("compressing", 0.45 + 0.3 * done[0] / max(db_size, 1))

                # one pass: compress, hash the file, and (full) hash every page
                on_block = (
                    (lambda b: sp.hash_block(b, page_size, table, algo))
                    if m.kind == "full"
                    else None
                )
                w = compress_file(
                    image, dest, comp, tick, on_block=on_block, limit=limit, level=level
                )
                db_sha = w.sha256
                m.members.append(self._member(dest, "sqlite", w, comp))
            else:
                raw_table, db_sha, _size = sp.hash_pages(image, page_size, algo, limit)
                table = bytearray(raw_table)
            m.sqlite = {
                "page_size": page_size,
                "page_count": db_size // page_size,
                "db_sha256": db_sha,
                "db_size": db_size,
                "read": "frozen file" if src.frozen else "online backup copy",
            }
            if m.kind != "snapshot":
                m.sqlite["page_hash"] = algo.name
            if m.kind == "full":
                dest = tier_dir / f"{m.id}.pagehashes"
                written.append(dest)
                w = write_stream(dest, "none", lambda out: out.write(bytes(table)))
                m.members.append(self._member(dest, "page_hashes", w, "none"))
            if m.kind == "incremental":
                progress("page diff", 0.5)
                parent_table = self.page_table(parent_chain)
                dest = self.layout.sqlite("incremental") / f"{m.id}.delta{SUFFIX[comp]}"
                written.append(dest)
                changed = [0]

                def produce(out: IO[bytes]) -> None:
                    changed[0] = sp.write_delta(
                        image, page_size, bytes(parent_table), bytes(table), out, algo
                    )

                w = write_stream(dest, comp, produce, level=level)
                m.members.append(self._member(dest, "sqlite_delta", w, comp))
                m.sqlite["changed_pages"] = changed[0]
                if changed[0] > 0.5 * (len(table) // algo.size):
                    m.notes.append(
                        "more than half of the pages changed (VACUUM or rebuild?): take a full backup"
                    )
            mark("sqlite member")
            if src.frozen:
                fut_db.result()  # quick_check reads through the transaction: then end it
            src.close()
            if cancelled():
                raise Cancelled("cancelled")

            # PDFs (content-addressed, stored once across all backups) and Chroma.
            progress("files", 0.75)
            if files_fut is not None:
                members, added, removed, took = files_fut.result()
                m.members.extend(members)
                m.files_added.extend(added)
                m.files_removed = removed
                timings["files (parallel)"] = took
            if chroma_fut is not None:
                w, dest, took = chroma_fut.result()
                written.append(dest)
                m.members.append(self._member(dest, "chromadb", w, comp))
                timings["chromadb (parallel)"] = took
            mark("wait files and chromadb")
        finally:
            if fut_db is not None and src.frozen:
                with contextlib.suppress(Exception):
                    fut_db.result()
            src.close()
            io_pool.shutdown(wait=True, cancel_futures=True)

        sqlite_counts = {
            "pages": int(vec_kinds.get("page", 0)),
            "papers": int(vec_kinds.get("paper", 0)),
        }
        if chroma_copy is not None:
            m.chroma = {"included": True, "counts": chroma_counts, "sqlite_counts": sqlite_counts}
            if sqlite_counts != chroma_counts:
                m.notes.append(
                    "ChromaDB held other counts than SQLite's vectors; a restore reconciles it from SQLite"
                )
        else:
            m.chroma = {
                "included": False,
                "restore": "rebuilt from the SQLite vectors",
                "sqlite_counts": sqlite_counts,
            }

        m.status = "verifying"
        write_manifest(self.layout.metadata, m)
        progress("verifying", 0.85)
        result = self._verify_fresh(m, fut_db, fut_chroma)
        mark("verify")
        m.timings = timings
        if not result.ok:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.ok)
            raise BackupError(f"verification failed: {failed}")
        m.status = "completed"
        m.verified = True
        m.verified_at = now_iso()

    def _stage_new_files(
        self, hashes: set[str], dest: Path, m: Manifest, stored: dict[str, tuple[str, str]]
    ) -> dict[str, Path]:
        """Hard-link (under the barrier) PDFs no backup holds yet: a delete can't take them."""
        out: dict[str, Path] = {}
        files = self.ctx.files
        dest.mkdir(parents=True, exist_ok=True)
        for sha in sorted(hashes):
            if sha in stored:
                continue
            src = files.path_for(sha)
            target = dest / sha
            try:
                os.link(src, target)
            except FileNotFoundError:
                m.notes.append(f"PDF {sha} is referenced but missing from the file store")
                m.files_missing.append(sha)
                continue
            except OSError:  # another file system, or no hard links: a copy
                shutil.copy2(src, target)
            out[sha] = target
        return out

    def _copy_chroma(self, dest: Path, m: Manifest) -> tuple[Path | None, dict[str, int]]:
        """Copy the embedded Chroma folder while writes are held (STACK.md: restores fine)."""
        vectors = self.ctx.vectors
        path = self.settings.chroma_path
        if self.settings.chroma_host or vectors is None or path is None or not path.exists():
            m.notes.append(
                "ChromaDB not copied (server deployment or not open): rebuilt from SQLite"
            )
            return None, {}
        counts = {name: vectors.count(name) for name in COLLECTIONS}
        shutil.copytree(path, dest, ignore=shutil.ignore_patterns("*.owner.lock"))
        return dest, counts

    def _store_chroma(self, m: Manifest, chroma_copy: Path, comp: str) -> tuple[Any, Path, float]:
        t = time.monotonic()
        dest = self.layout.chromadb / f"{m.id}.tar{SUFFIX[comp]}"
        w = tar_folder(chroma_copy, dest, comp, m.compression_level)
        return w, dest, round(time.monotonic() - t, 3)

    @staticmethod
    def _check_staged_chroma(tarred: Future, folder: Path, counts: dict[str, int]) -> Check:
        try:
            tarred.result()
        except Exception as exc:  # the tar failed: reported by the member, not opened
            return Check("chromadb", "failed", f"not stored: {exc}")
        return check_chroma(folder, counts, in_place=True)

    def _store_blob(self, sha: str, src: Path, comp: str, level: int | None) -> Member:
        """Store one PDF; an uncompressed one is read back from the disk here (verified)."""
        pcomp = comp if worth_compressing(src, comp) else "none"
        dest = self.layout.root / self.layout.blob_name(sha, pcomp)
        if pcomp == "none":
            w = copy_file(src, dest, sync_dir=False)  # see _store_files
        else:
            w = compress_file(src, dest, pcomp, level=level, sync_dir=False)
        if w.sha256 != sha:
            dest.unlink(missing_ok=True)
            if pcomp == "none" and sha256_file(src) == sha:
                raise BackupError(
                    f"PDF {sha[:12]} read back from the backup differs from its source"
                )
            raise BackupError(f"PDF {sha[:12]} in the file store does not match its name")
        return self._member(dest, "file", w, pcomp)

    def _store_files(
        self,
        m: Manifest,
        linked: dict[str, Path],
        needed_files: set[str],
        parent_chain: list[Manifest],
        comp: str,
    ) -> tuple[list[Member], list[str], list[str], float]:
        """(members to add, PDFs added, PDFs removed, seconds) — merged by the caller.

        Creating and fsyncing a file per PDF is syscall-bound, so a few threads
        store them at once; hashing and zstd release the GIL too.
        """
        t = time.monotonic()
        needed = set(linked) | set(needed_files)
        known = {
            mem.name: mem
            for other in self.manifests()
            for mem in other.members
            if mem.role == "file" and mem.size_compressed
        }
        members: dict[str, Member] = {}
        new = sorted(sha for sha in needed if sha in linked)
        with ThreadPoolExecutor(max_workers=FILE_THREADS, thread_name_prefix="backup-pdf") as ex:
            for sha, mem in zip(
                new,
                ex.map(lambda x: self._store_blob(x, linked[x], comp, m.compression_level), new),
                strict=True,
            ):
                members[sha] = mem
        # One fsync per folder that gained a PDF (and of the folders above, which
        # may have gained a folder), not one per PDF: the renames are durable
        # before the manifest can say "completed".
        for folder in sorted({(self.layout.root / members[s].name).parent for s in new}):
            fsync_dir(folder)
        if new:
            fsync_dir(self.layout.files)
            fsync_dir(self.layout.root)
        added = list(new)
        for sha in sorted(needed - set(linked)):
            existing = self.layout.existing_blob(sha)
            if existing is None:
                continue  # noted as missing when staging
            name, bcomp = existing
            members[sha] = self._known_blob(name, sha, bcomp, known)
        took = round(time.monotonic() - t, 3)
        if m.kind == "full":
            return [members[s] for s in sorted(members)], added, [], took
        before = self.file_set(parent_chain)
        removed = sorted(set(before) - set(members))
        for sha in sorted(set(members) - set(before)):
            if sha not in added:
                added.append(sha)
        return [members[s] for s in sorted(set(members) - set(before))], added, removed, took

    def _known_blob(
        self, name: str, sha: str, comp: str, known: dict[str, Member] | None = None
    ) -> Member:
        """A PDF an earlier backup stored: reuse what that backup's manifest recorded."""
        if known is not None and name in known:
            return known[name]
        # Not in any manifest (e.g. left by a failed backup): re-read it once.
        r = read_member(self.layout.root / name, comp)
        if r.sha256 != sha:
            raise BackupError(f"stored PDF {name} is damaged")
        return Member(name, "file", r.size_raw, r.size_compressed, r.sha256, comp, r.sha256_stored)

    def _member(self, path: Path, role: str, w: Any, comp: str) -> Member:
        return Member(
            name=path.relative_to(self.layout.root).as_posix(),
            role=role,
            size_raw=w.size_raw,
            size_compressed=w.size_compressed,
            sha256=w.sha256,
            compression=comp,
            sha256_stored=w.sha256_stored,
        )

    def _verify_fresh(self, m: Manifest, fut_db: Future, fut_chroma: Future | None) -> VerifyResult:
        """Verify a just-written backup: every member read back; the staged copies checked.

        Every member was read back from the disk while it was written (after an
        fsync and a page-cache drop: ``archive._ReadBack``, ``archive.copy_file``),
        its stored bytes hashed and decoded, so here each one is only found in
        place at its size. The staged database and Chroma folder are what the
        members decode to, so checking the staged copies checks the backup.
        """
        result = VerifyResult(m.id)
        added = set(m.files_added)
        for mem in m.members:
            if mem.role == "file" and mem.sha256 not in added:
                path = self.layout.root / mem.name
                if not (path.is_file() and path.stat().st_size == mem.size_compressed):
                    result.add(f"member:{mem.name}", False, "shared PDF missing or resized")
        # this backup's own members, and the PDFs it stored (others were stored before)
        own = [x for x in m.members if x.role != "file" or x.sha256 in added]
        bad = [
            f"{x.name}: missing or resized after it was read back"
            for x in own
            if not (
                (path := self.layout.root / x.name).is_file()
                and path.stat().st_size == x.size_compressed
            )
        ]
        result.add(
            "members",
            not bad,
            "; ".join(bad[:5]) or f"{len(own)} member(s) read back from the disk and decoded",
        )
        ok, pragma, msg = fut_db.result()
        result.add(f"sqlite:{pragma}", ok, msg)
        if fut_chroma is not None:
            result.checks.append(fut_chroma.result())
        return result

    # --- verification of an existing backup ------------------------------------------------
    def verify(self, backup_id: str, *, update: bool = True) -> VerifyResult:
        """Re-read every member of the backup's chain, rebuild it in scratch and check it."""
        from refserver.safety.restore import materialize

        with self.lock:  # a prune must not remove members while they are read
            m = self.get(backup_id)
            result = VerifyResult(backup_id)
            scratch = (
                self.layout.staging / f"verify-{backup_id}-{os.getpid()}-{threading.get_ident()}"
            )
            try:
                materialize(self, m, scratch, result, files=True)
            except Exception as exc:
                if not any(not c.ok for c in result.checks):
                    result.checks.append(Check("restore", "failed", str(exc)))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if update:
            m.verified = result.ok
            m.verified_at = now_iso()
            if result.ok and m.status == "damaged":
                m.status = "completed"
            elif not result.ok and m.status == "completed":
                m.status = "damaged"
            write_manifest(self.layout.metadata, m)
            self.record(m)
        return result

    # --- deleting ------------------------------------------------------------------------
    def delete(self, backup_id: str) -> int:
        """Remove a backup's own members and manifest; returns bytes freed (PDFs: see gc)."""
        m = self.get(backup_id)
        freed = 0
        for mem in m.members:
            if mem.role == "file":
                continue
            path = self.layout.root / mem.name
            if path.exists():
                freed += path.stat().st_size
                path.unlink()
        (self.layout.metadata / f"{m.id}.json").unlink(missing_ok=True)
        with contextlib.suppress(WritesPaused), self.ctx.db.write(bump=False) as s:
            s.execute(delete(BackupRecord).where(BackupRecord.backup_id == backup_id))
        return freed

    def referenced_blobs(self) -> set[str]:
        """Stored PDF names any remaining backup still needs."""
        names: set[str] = set()
        manifests = {m.id: m for m in self.manifests()}
        for m in manifests.values():
            if m.kind == "full":
                names |= {x.name for x in m.members_by_role("file")}
            elif m.kind == "incremental":
                try:
                    names |= {x.name for x in self.file_set(self.chain(m)).values()}
                except ChainGap:
                    names |= {x.name for x in m.members_by_role("file")}
        return names

    def gc_files(self, dry_run: bool = False) -> tuple[list[str], int]:
        """Stored PDFs no backup needs any more (removed unless ``dry_run``)."""
        keep = self.referenced_blobs()
        gone: list[str] = []
        freed = 0
        for path in sorted(self.layout.files.glob("*/*")):
            name = path.relative_to(self.layout.root).as_posix()
            if name in keep or path.name.startswith(".part-"):
                continue
            gone.append(name)
            freed += path.stat().st_size
            if not dry_run:
                path.unlink()
        return gone, freed

    # --- the backups table: an index of the manifests -----------------------------------
    def record(self, m: Manifest) -> None:
        """Mirror a manifest into the ``backups`` table (skipped while writes are paused)."""
        try:
            with self.ctx.db.write(bump=False) as s:
                row = s.execute(
                    select(BackupRecord).where(BackupRecord.backup_id == m.id)
                ).scalar_one_or_none()
                if row is None:
                    row = BackupRecord(backup_id=m.id, type=m.kind)
                    s.add(row)
                row.type = m.kind
                row.parent_id = m.parent
                row.status = m.status
                row.generation = m.generation
                row.size_bytes = m.size_compressed
                row.raw_bytes = m.size_raw
                row.description = m.description or ""
                row.retention_days = m.retention_days
                row.path = str(self.layout.metadata / f"{m.id}.json")
                row.manifest = m.to_dict()
                row.verified = m.verified
                row.error = m.error
                row.created_at = m.created_at
                row.duration_seconds = m.duration_seconds
        except WritesPaused:
            log.info("backups table not updated for %s while writes are paused", m.id)

    def sync_records(self) -> int:
        """Make the ``backups`` table match the manifests (after a restore, or on start)."""
        manifests = self.manifests()
        for m in manifests:
            self.record(m)
        ids = {m.id for m in manifests}
        with self.ctx.db.write(bump=False) as s:
            stale = [r for r in s.execute(select(BackupRecord.backup_id)).scalars() if r not in ids]
            if stale:
                s.execute(delete(BackupRecord).where(BackupRecord.backup_id.in_(stale)))
        return len(manifests)

    # --- summaries for the API and CLI ----------------------------------------------------
    def status(self) -> dict[str, Any]:
        manifests = self.manifests()
        done = [m for m in manifests if m.status == "completed"]
        sqlite_members = [
            x
            for m in manifests
            for x in m.members
            if x.role in ("sqlite", "sqlite_delta", "page_hashes")
        ]
        chroma = [m for m in done if m.members_by_role("chromadb")]
        blobs = list(self.layout.files.glob("*/*.pdf*"))
        counts = {k: 0 for k in KINDS}
        for m in manifests:
            counts[m.kind] = counts.get(m.kind, 0) + 1
        latest = done[-1] if done else None
        unified = [m for m in done if m.unified or m.kind == "full"]
        return {
            "manifests": manifests,
            "sqlite_total_size": sum(x.size_compressed for x in sqlite_members),
            "counts": counts,
            "latest": latest,
            "chroma": chroma,
            "chroma_size": sum(
                x.size_compressed for m in chroma for x in m.members_by_role("chromadb")
            ),
            "files_count": len(blobs),
            "files_size": sum(p.stat().st_size for p in blobs),
            "unified_available": bool(unified),
        }


def engine_of(ctx: Any) -> BackupEngine:
    """The process's shared engine (its lock keeps backups, restores and prunes apart)."""
    engine = ctx.extras.get("backup")
    if engine is None or not isinstance(engine, BackupEngine):
        engine = BackupEngine(ctx)
        ctx.extras["backup"] = engine
    return engine
