"""Consistency checker and safe fixer: SQLite + PDF files (truth) vs ChromaDB (index).

The checker works on explicit parts (:class:`Parts`: a ``Database``, a
``VectorIndex``, a ``FileStore`` and a few settings) so a backup-restore drill can
run it on a scratch copy; :meth:`Parts.from_ctx` builds them from the live
``AppContext``.

How a check stays fast and race-free
    Phase 1 reads SQLite in ONE read transaction (ids, checksums, a little
    metadata; never the vector blobs) while, in parallel threads, it reads every
    ChromaDB entry's metadata (offset windows of ``collection.get``; for an
    embedded folder a validated read-only fast path, see
    :func:`read_metadata_direct`) and runs ``integrity_check``; the two stores are
    then compared as dicts and sets. Nothing is locked, so ingests keep running.
    Phase 2 re-reads only the suspects (the ids phase 1 found to disagree, through
    ChromaDB's public API) while holding the write barrier, when SQLite and
    ChromaDB are known to agree for every finished write (``Library`` writes SQLite
    then ChromaDB under the barrier). A suspect that no longer disagrees was a
    write in flight and is dropped, so a busy library does not report false
    positives.

Types (DESIGN.md §1: ChromaDB must hold exactly what SQLite holds)
    ``missing_in_chromadb``  a vector row in SQLite that ChromaDB lacks, or a page
                             with text that has no vector at all (fix: upsert from
                             SQLite, or re-embed the page text).
    ``missing_in_sqlite``    a ChromaDB entry whose paper SQLite has NO trace of:
                             no paper row, no ingest job naming it, no audited
                             deletion. ChromaDB knows a paper the truth never heard
                             of (SQLite lost data, e.g. an older database restored
                             next to a newer index, or a foreign writer): high.
    ``orphaned_chromadb``    a leftover of something SQLite knew and removed: an
                             entry of a page/vector the (existing) paper no longer
                             has, or of a paper whose deletion SQLite recorded (an
                             audited ``delete_paper`` or an ingest job naming it).
    ``embedding_mismatch``   ChromaDB's vector differs from SQLite's copy (checksum
                             in the entry's metadata vs ``vectors.checksum``; with
                             ``deep=True`` the stored embedding is compared with
                             SQLite's vector, within 1e-5 because ChromaDB's cosine
                             space renormalises, and SQLite's own checksum is
                             verified), or the
                             entry claims another model/dimension than SQLite's row;
                             also SQLite rows made by a model other than the
                             configured one (re-embedded by the fix).
    ``orphaned_sqlite``      pages/vectors/field_edits rows whose paper row is gone
                             (only possible when foreign keys were bypassed), and
                             finished jobs naming a doc id that is neither a paper
                             nor an audited deletion.
    ``count_mismatch``       per collection: SQLite vector rows of existing papers
                             vs ChromaDB's count.
    ``metadata_mismatch``    doc_id/title/year/page copied into ChromaDB differ.
    ``pdf_missing``, ``pdf_checksum_mismatch``, ``pdf_unreferenced`` (OS junk,
    temporaries and files younger than the grace period are ignored; files of an
    unfinished ingest job count as referenced), ``sqlite_integrity``
    (``PRAGMA integrity_check`` and ``foreign_key_check``; FK violations of
    pages/vectors/field_edits are reported once, as ``orphaned_sqlite``; and the
    full-text indexes: a paper one of them lacks, or a row of a paper that is gone,
    read from FTS5's ``_docsize`` tables — fixed by re-indexing the paper, deleting
    the metadata row, or rebuilding the text index).

Fix rules (dry-run unless ``dry_run=False``; never deletes a PDF or a paper row)
    * Missing/mismatched vectors and metadata are upserted from SQLite; a page with
      text but no vector (or a stale model) is re-embedded into SQLite first.
    * Deletions are reversible: ChromaDB entries (ids, embeddings, metadata) and
      SQLite rows are written to ``<quarantine>/<run>/`` as JSON before removal;
      unreferenced PDFs are MOVED there, never deleted; a corrupt or missing PDF is
      restored only from a copy in the backups whose SHA-256 verifies.
    * In-flight rule: an orphan (ChromaDB entry or SQLite row) is removed only if
      ``generation < current_generation - in_flight_generations`` (the writer has
      committed at least that many transactions since it was written) OR its age
      is at least ``grace_seconds``. Age is the row's own timestamp where it has
      one (``vectors.created_at``, ``field_edits.created_at``, ``jobs.updated_at``);
      a ChromaDB entry has none, so its age is the time since a recorded check first
      reported it. Orphaned ``pages`` rows carry neither and are removed at once:
      a page and its paper commit in one transaction, so a committed page without
      its paper cannot be a write in flight.
    * On request (``rebuild=True``) both collections are dropped and rebuilt from
      SQLite's vectors while the writer is held, after the entries SQLite lacks
      have been copied to the quarantine.
    * A finished job naming a vanished paper keeps its row: only its reference is
      cleared (the old value stays in its ``result_summary``). A dangling
      ``api_tokens`` row (its user is gone) is deleted; other foreign-key
      violations and ``integrity_check`` failures are left for a restore.
    * All SQLite writes go through ``db.write()``; ChromaDB and file changes are made
      while holding ``db.barrier()``. Each fix run is recorded as
      ``CheckRun(kind="fix")`` with every change, and audited when a user asked.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import MetaData, Table, func, or_, select, text

from refserver.embedding.model import decode_vector
from refserver.storage import fts
from refserver.storage.db import Database
from refserver.storage.files import FileStore, sha256_file
from refserver.storage.models import (
    AuditEntry,
    CheckRun,
    Job,
    LibraryState,
    Page,
    Paper,
    Vector,
)
from refserver.storage.vectors import PAGES, PAPERS, VectorIndex, page_vector_id

log = logging.getLogger(__name__)

ISSUE_TYPES: tuple[str, ...] = (
    "missing_in_chromadb",
    "missing_in_sqlite",
    "embedding_mismatch",
    "orphaned_chromadb",
    "orphaned_sqlite",
    "count_mismatch",
    "metadata_mismatch",
    "pdf_missing",
    "pdf_checksum_mismatch",
    "pdf_unreferenced",
    "sqlite_integrity",
)
INDEX_TYPES: tuple[str, ...] = (
    "missing_in_chromadb",
    "missing_in_sqlite",
    "embedding_mismatch",
    "orphaned_chromadb",
    "count_mismatch",
    "metadata_mismatch",
)  # what a rebuild of the vector index from SQLite repairs
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")
SEVERITY: dict[str, str] = {
    "sqlite_integrity": "critical",
    "pdf_missing": "critical",
    "pdf_checksum_mismatch": "critical",
    "missing_in_sqlite": "high",
    "missing_in_chromadb": "high",
    "embedding_mismatch": "high",
    "orphaned_chromadb": "medium",
    "orphaned_sqlite": "medium",
    "count_mismatch": "medium",
    "metadata_mismatch": "medium",
    "pdf_unreferenced": "low",
}
KIND_OF = {PAGES: "page", PAPERS: "paper"}
COLLECTION_OF = {"page": PAGES, "paper": PAPERS}
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "ehthumbs.db"})
JOB_ACTIVE = ("queued", "processing")
FK_CHILD_TABLES = ("pages", "vectors", "field_edits")  # reported as orphaned_sqlite
FK_FIXABLE_TABLES = ("api_tokens",)  # a token of a deleted user is useless: safe to drop
IN_FLIGHT_GENERATIONS = 2
STORED_ISSUES = 1000  # issues kept in a CheckRun row (counts are always complete)


# --- data -----------------------------------------------------------------------------
@dataclass
class Issue:
    """One disagreement, with enough identity for the fixer to find it again."""

    type: str
    description: str
    suggested_fix: str
    doc_id: str | None = None
    page: int | None = None
    severity: str = ""
    collection: str | None = None
    entry_id: str | None = None  # ChromaDB id, "<table>:<rowid>", or a file path
    fixable: bool = True
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.severity = self.severity or SEVERITY[self.type]

    @property
    def key(self) -> str:
        """Stable identity across runs (first-seen ages are tracked by it)."""
        return f"{self.type}|{self.collection or ''}|{self.entry_id or ''}|{self.doc_id or ''}|{self.page if self.page is not None else ''}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = self.key
        return d


@dataclass
class CheckResult:
    """The outcome of one check; ``to_dict`` is the API contract."""

    issues: list[Issue]
    duration_seconds: float
    generation: int
    checked_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    transient_dropped: int = 0

    @property
    def total_issues(self) -> int:
        return len(self.issues)

    @property
    def issues_by_type(self) -> dict[str, int]:
        return dict(Counter(i.type for i in self.issues))

    @property
    def issues_by_severity(self) -> dict[str, int]:
        c = Counter(i.severity for i in self.issues)
        return {s: int(c.get(s, 0)) for s in SEVERITIES}

    @property
    def overall_status(self) -> str:
        sev = self.issues_by_severity
        if sev["critical"]:
            return "critical"
        if sev["high"]:
            return "degraded"
        if sev["medium"] or sev["low"]:
            return "warning"
        return "healthy"

    def recommendations(self) -> list[str]:
        by = self.issues_by_type
        recs: list[str] = []
        if by.get("sqlite_integrity"):
            recs.append(
                "SQLite reports damage: take no new backups over good ones; restore the "
                "newest verified backup (or run `refserver check --fix` for foreign-key leftovers)."
            )
        if by.get("pdf_missing") or by.get("pdf_checksum_mismatch"):
            recs.append(
                "PDF files are missing or changed: `refserver check --fix` restores them from a "
                "backup copy whose SHA-256 verifies; otherwise restore from an offsite backup."
            )
        if by.get("missing_in_sqlite"):
            recs.append(
                "ChromaDB holds papers SQLite never knew: check whether SQLite was restored from "
                "an older backup before letting `--fix` remove those entries."
            )
        index = sum(
            by.get(t, 0)
            for t in (
                "missing_in_chromadb",
                "embedding_mismatch",
                "metadata_mismatch",
                "orphaned_chromadb",
                "count_mismatch",
            )
        )
        if index:
            recs.append(
                "The vector index disagrees with SQLite: `refserver check --fix` repairs it from "
                "SQLite (or `--rebuild-index` rebuilds it entirely)."
            )
        if by.get("orphaned_sqlite"):
            recs.append(
                "Rows point at papers that no longer exist: `refserver check --fix` removes them "
                "(kept in the quarantine folder) once they are past the grace period."
            )
        if by.get("pdf_unreferenced"):
            recs.append(
                "Files no paper refers to: `refserver check --fix` moves them to the quarantine "
                "folder (nothing is deleted)."
            )
        if not self.issues:
            recs.append("No action needed: SQLite, ChromaDB and the PDF files agree.")
        return recs

    def to_dict(self, *, max_issues: int | None = None) -> dict[str, Any]:
        issues = self.issues if max_issues is None else self.issues[:max_issues]
        return {
            "overall_status": self.overall_status,
            "duration_seconds": round(self.duration_seconds, 3),
            "total_issues": self.total_issues,
            "issues_by_type": self.issues_by_type,
            "issues_by_severity": self.issues_by_severity,
            "issues": [i.to_dict() for i in issues],
            "recommendations": self.recommendations(),
            "generation": self.generation,
            "checked_at": self.checked_at.isoformat(),
            "counts": dict(self.counts),
        }


@dataclass
class Parts:
    """The stores a check runs on: the live ones or a restored scratch copy."""

    db: Database
    vectors: VectorIndex | None
    files: FileStore
    grace_seconds: int = 3600
    in_flight_generations: int = IN_FLIGHT_GENERATIONS
    expected_model: str | None = None  # None: do not compare SQLite rows with a model
    expected_dimension: int | None = None
    embedder: Callable[[], Any] | None = None  # lazy, only the fixer re-embeds
    chunk_words: int = 150
    quarantine_dir: Path | None = None
    backup_file_dirs: list[Path] = field(default_factory=list)
    audit: Callable[..., None] | None = None
    vector_storage: str = "float32"  # encoding of re-embedded rows (settings.vector_storage)

    @classmethod
    def from_ctx(cls, ctx: Any) -> Parts:
        s = ctx.settings
        from refserver.embedding.model import Embedder

        return cls(
            db=ctx.db,
            vectors=ctx.vectors,
            files=ctx.files,
            grace_seconds=int(getattr(s, "orphan_grace_seconds", 3600)),
            expected_model=s.embedding_model,
            expected_dimension=Embedder.dimension,
            embedder=ctx.embedder,
            chunk_words=int(getattr(s, "chunk_words", 150)),
            quarantine_dir=s.data_dir / "quarantine",
            backup_file_dirs=[s.backups_dir / "files"],
            audit=ctx.audit,
            vector_storage=str(getattr(s, "vector_storage", "float32")),
        )


def as_parts(obj: Any) -> Parts:
    return obj if isinstance(obj, Parts) else Parts.from_ctx(obj)


# --- the SQLite snapshot -------------------------------------------------------------------
@dataclass
class VecRow:
    id: int
    paper_id: int
    kind: str
    page: int
    chroma_id: str
    checksum: str
    model: str
    dimension: int
    generation: int
    created_at: Any  # as stored; parsed only for the few rows that need it (orphans)


@dataclass
class PaperRow:
    id: int
    doc_id: str
    title: str | None
    year: int | None
    file_sha256: str
    file_size: int

    def __post_init__(self) -> None:
        # What ``chroma_metadata`` writes for this paper, computed once per paper.
        self.meta_title = (self.title or "")[:500]
        self.meta_year = self.year if self.year is not None else -1


@dataclass
class Snapshot:
    generation: int
    papers: dict[int, PaperRow]
    by_doc: dict[str, PaperRow]
    vectors: list[VecRow]
    known_docs: set[str]  # doc ids SQLite has a trace of besides papers (jobs, audited deletes)
    orphan_pages: list[tuple[int, int, int]]  # (page id, paper_id, page_number)
    orphan_edits: list[tuple[int, int, Any]]  # (id, paper_id, created_at)
    orphan_jobs: list[tuple[str, str, str, Any]]  # (job id, doc id, status, updated_at)
    unvectored_pages: list[tuple[int, int]]  # (paper_id, page_number) with text, no vector
    active_job_shas: set[str]
    page_count: int


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _snapshot(db: Database) -> Snapshot:
    """Everything the comparison needs from SQLite, in one read transaction, no blobs."""
    with db.read() as s:
        conn = s.connection()
        q = conn.exec_driver_sql
        gen = q("SELECT generation FROM library_state WHERE id = 1").scalar() or 0
        papers = {
            r[0]: PaperRow(r[0], r[1], r[2], r[3], r[4], r[5] or 0)
            for r in q("SELECT id, doc_id, title, year, file_sha256, file_size FROM papers")
        }
        vectors = [
            VecRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8] or 0, r[9])
            for r in q(
                "SELECT id, paper_id, kind, page_number, chroma_id, checksum, model, "
                "dimension, generation, created_at FROM vectors"
            )
        ]
        known = {
            r[0]
            for r in q(
                "SELECT paper_id FROM jobs WHERE paper_id IS NOT NULL UNION "
                "SELECT target FROM audit_log WHERE action = 'delete_paper' AND target IS NOT NULL"
            )
        }
        audited_deletes = {
            r[0]
            for r in q(
                "SELECT DISTINCT target FROM audit_log WHERE action = 'delete_paper' "
                "AND target IS NOT NULL"
            )
        }
        orphan_pages = [
            (r[0], r[1], r[2])
            for r in q(
                "SELECT pg.id, pg.paper_id, pg.page_number FROM pages pg "
                "WHERE NOT EXISTS (SELECT 1 FROM papers p WHERE p.id = pg.paper_id)"
            )
        ]
        orphan_edits = [
            (r[0], r[1], _dt(r[2]))
            for r in q(
                "SELECT e.id, e.paper_id, e.created_at FROM field_edits e "
                "WHERE NOT EXISTS (SELECT 1 FROM papers p WHERE p.id = e.paper_id)"
            )
        ]
        orphan_jobs = [
            (r[0], r[1], r[2], _dt(r[3]))
            for r in q(
                "SELECT j.id, j.paper_id, j.status, j.updated_at FROM jobs j "
                "WHERE j.paper_id IS NOT NULL AND j.status NOT IN ('queued', 'processing') "
                "AND NOT EXISTS (SELECT 1 FROM papers p WHERE p.doc_id = j.paper_id)"
            )
            if r[1] not in audited_deletes
        ]
        unvectored = [
            (r[0], r[1])
            for r in q(
                "SELECT pg.paper_id, pg.page_number, pg.text FROM pages pg "
                "JOIN papers p ON p.id = pg.paper_id "
                "WHERE length(pg.text) > 0 AND NOT EXISTS (SELECT 1 FROM vectors v "
                "WHERE v.paper_id = pg.paper_id AND v.kind = 'page' "
                "AND v.page_number = pg.page_number)"
            )
            if r[2] and r[2].split()
        ]
        active = {
            r[0]
            for r in q(
                "SELECT file_sha256 FROM jobs WHERE file_sha256 IS NOT NULL "
                "AND status IN ('queued', 'processing')"
            )
        }
        page_count = q("SELECT count(*) FROM pages").scalar() or 0
    by_doc = {p.doc_id: p for p in papers.values()}
    return Snapshot(
        int(gen),
        papers,
        by_doc,
        vectors,
        known,
        orphan_pages,
        orphan_edits,
        orphan_jobs,
        unvectored,
        active,
        int(page_count),
    )


# --- comparing SQLite with ChromaDB -----------------------------------------------------------
def _doc_of(entry_id: str, meta: dict[str, Any] | None, kind: str) -> str:
    if meta and isinstance(meta.get("doc_id"), str):
        return meta["doc_id"]
    return entry_id.rsplit(":", 1)[0] if kind == "page" else entry_id


def _page_of(entry_id: str, meta: dict[str, Any] | None, kind: str) -> int | None:
    if kind != "page":
        return None
    if meta and isinstance(meta.get("page"), int):
        return int(meta["page"])
    try:
        return int(entry_id.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


# ChromaDB's cosine space renormalises stored vectors: unit vectors come back with
# float32 rounding (measured max |diff| 1.5e-8), so deep mode compares with a tolerance.
EMBEDDING_TOLERANCE = 1e-5


def _sqlite_vectors(
    db: Database, kind: str, ids: list[str] | None = None
) -> dict[str, tuple[np.ndarray, bool]]:
    """Deep mode only: SQLite's vectors (all of ``kind``, or ``ids``) and whether each
    still matches its checksum. Each is decoded by its stored dtype, which is exactly
    what was written to ChromaDB (int8/float16 rows: the dequantized vector)."""
    out: dict[str, tuple[np.ndarray, bool]] = {}
    base = select(
        Vector.chroma_id, Vector.vector, Vector.checksum, Vector.dtype, Vector.dimension
    ).where(Vector.kind == kind)
    queries = (
        [base]
        if ids is None
        else [base.where(Vector.chroma_id.in_(ids[k : k + 500])) for k in range(0, len(ids), 500)]
    )
    with db.read() as s:
        for q in queries:
            for cid, blob, digest, dtype, dim in s.execute(q):
                ok = hashlib.sha256(blob).hexdigest() == digest
                try:
                    out[cid] = (decode_vector(blob, dtype, dim), ok)
                except ValueError:  # wrong length for its dtype: unreadable
                    out[cid] = (np.zeros(0, dtype=np.float32), False)
    return out


def _compare_collection(
    name: str,
    want: dict[str, tuple[VecRow, PaperRow]],
    have: dict[str, dict[str, Any]],
    embeddings: dict[str, Any] | None,
    snap: Snapshot,
    ids: Iterable[str] | None = None,
    sqlite_vecs: dict[str, tuple[np.ndarray, bool]] | None = None,
) -> list[Issue]:
    """Issues of one collection; ``ids`` restricts the comparison (phase 2)."""
    kind = KIND_OF[name]
    issues: list[Issue] = []
    keys = set(ids) if ids is not None else set(want) | set(have)
    for cid in sorted(keys):
        w = want.get(cid)
        meta = have.get(cid)
        if w is not None and meta is None:
            row, paper = w
            issues.append(
                Issue(
                    "missing_in_chromadb",
                    f"{kind} vector {cid} is in SQLite but not in ChromaDB",
                    "re-add the vector from SQLite (`refserver check --fix`)",
                    doc_id=paper.doc_id,
                    page=row.page if kind == "page" else None,
                    collection=name,
                    entry_id=cid,
                    detail={"generation": row.generation},
                )
            )
            continue
        if w is None and meta is not None:
            doc = _doc_of(cid, meta, kind)
            page = _page_of(cid, meta, kind)
            gen = meta.get("generation") if isinstance(meta.get("generation"), int) else None
            detail = {"generation": gen}
            if doc in snap.by_doc or doc in snap.known_docs:
                why = (
                    f"paper {doc} has no {kind} vector {cid} in SQLite (deleted page or vector)"
                    if doc in snap.by_doc
                    else f"paper {doc} was deleted from SQLite but its {kind} entry {cid} remains"
                )
                issues.append(
                    Issue(
                        "orphaned_chromadb",
                        why,
                        "delete the entry from ChromaDB (`--fix`, after the grace period)",
                        doc_id=doc,
                        page=page,
                        collection=name,
                        entry_id=cid,
                        detail=detail,
                    )
                )
            else:
                issues.append(
                    Issue(
                        "missing_in_sqlite",
                        f"ChromaDB entry {cid} belongs to paper {doc}, which SQLite has no "
                        "record of",
                        "if SQLite was restored from an older backup, restore a matching pair; "
                        "otherwise delete the entry (`--fix`, after the grace period)",
                        doc_id=doc,
                        page=page,
                        collection=name,
                        entry_id=cid,
                        detail=detail,
                    )
                )
            continue
        if w is None or meta is None:
            continue
        row, paper = w
        g = meta.get
        if (
            g("checksum") == row.checksum
            and g("model") == row.model
            and g("dimension") == row.dimension
            and g("page") == row.page
            and g("doc_id") == paper.doc_id
            and g("year") == paper.meta_year
            and g("title") == paper.meta_title
            and embeddings is None
        ):
            continue  # the common case: one pass of lookups, no allocations
        page = row.page if kind == "page" else None
        reasons: list[str] = []
        if meta.get("checksum") != row.checksum:
            reasons.append("checksum in ChromaDB metadata differs from SQLite")
        if meta.get("model") != row.model:
            reasons.append(f"model {meta.get('model')!r} != SQLite {row.model!r}")
        if meta.get("dimension") != row.dimension:
            reasons.append(f"dimension {meta.get('dimension')!r} != SQLite {row.dimension}")
        if embeddings is not None and sqlite_vecs is not None and cid in embeddings:
            emb = np.asarray(embeddings[cid], dtype=np.float32)
            mine, intact = sqlite_vecs.get(cid, (None, False))
            if mine is not None and not intact:
                issues.append(
                    Issue(
                        "embedding_mismatch",
                        f"{kind} vector {cid}: SQLite's copy no longer matches its checksum",
                        "re-embed from the page text (`--fix`)",
                        doc_id=paper.doc_id,
                        page=page,
                        collection="sqlite",
                        entry_id=cid,
                        detail={"scope": "sqlite_checksum"},
                    )
                )
            elif mine is not None and emb.shape != mine.shape:
                reasons.append(f"stored embedding has {emb.shape[-1]} dimensions")
            elif mine is not None and float(np.abs(emb - mine).max()) > EMBEDDING_TOLERANCE:
                reasons.append("stored embedding differs from SQLite's vector")
        if reasons:
            issues.append(
                Issue(
                    "embedding_mismatch",
                    f"{kind} vector {cid}: " + "; ".join(reasons),
                    "overwrite the ChromaDB vector from SQLite (`--fix`)",
                    doc_id=paper.doc_id,
                    page=page,
                    collection=name,
                    entry_id=cid,
                    detail={"reasons": reasons},
                )
            )
        wrong: dict[str, Any] = {}
        expect = {
            "doc_id": paper.doc_id,
            "title": paper.meta_title,
            "year": paper.meta_year,
            "page": row.page,
        }
        for k, v in expect.items():
            if meta.get(k) != v:
                wrong[k] = {"chromadb": meta.get(k), "sqlite": v}
        if wrong:
            issues.append(
                Issue(
                    "metadata_mismatch",
                    f"{kind} entry {cid}: {', '.join(sorted(wrong))} differ from SQLite",
                    "rewrite the entry's metadata from SQLite (`--fix`)",
                    doc_id=paper.doc_id,
                    page=page,
                    collection=name,
                    entry_id=cid,
                    detail={"fields": wrong},
                )
            )
    return issues


def _want(snap: Snapshot, kind: str) -> dict[str, tuple[VecRow, PaperRow]]:
    out: dict[str, tuple[VecRow, PaperRow]] = {}
    for v in snap.vectors:
        if v.kind == kind:
            p = snap.papers.get(v.paper_id)
            if p is not None:
                out[v.chroma_id] = (v, p)
    return out


SCAN_PAGE = 5000
SCAN_THREADS = 2  # ChromaDB's Rust core releases the GIL: two windows at once ~halve the scan


def _scan_chroma(
    vectors: VectorIndex, name: str, deep: bool, ids: list[str] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """ChromaDB's metadata (and embeddings when deep) of every entry, or of ``ids``.

    Metadata reads dominate a check (ChromaDB stores each key as a row), so the
    full scan reads fixed offset windows in parallel threads. Entries moved by a
    concurrent write may be missed by this pass; suspects are confirmed later.
    """
    include = ["metadatas", "embeddings"] if deep else ["metadatas"]
    metas: dict[str, dict[str, Any]] = {}
    embs: dict[str, Any] | None = {} if deep else None

    def take(res: dict[str, Any]) -> int:
        got = res["ids"]
        ms = res.get("metadatas")
        es = res.get("embeddings") if deep else None
        for i, cid in enumerate(got):
            metas[cid] = (ms[i] if ms is not None else None) or {}
            if embs is not None and es is not None:
                embs[cid] = es[i]
        return len(got)

    if ids is not None:
        for start in range(0, len(ids), 2000):
            take(vectors.get(name, ids[start : start + 2000], include=include))
        return metas, embs
    if not deep and USE_DIRECT_READ:
        direct = read_metadata_direct(vectors, name)
        if direct is not None:
            return direct, None
    col = vectors.collection(name)

    def window(offset: int) -> dict[str, Any]:
        return col.get(include=include, limit=SCAN_PAGE, offset=offset)

    total = vectors.count(name)
    offsets = list(range(0, total, SCAN_PAGE))
    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        for res in pool.map(window, offsets):
            take(res)
    offset = len(offsets) * SCAN_PAGE
    while True:  # entries added since count(): keep reading until a short window
        if take(window(offset)) < SCAN_PAGE:
            break
        offset += SCAN_PAGE
    return metas, embs


DIRECT_CHUNK = 20000
USE_DIRECT_READ = True  # False: always ChromaDB's public API (the bench compares both)


def read_metadata_direct(vectors: VectorIndex, name: str) -> dict[str, dict[str, Any]] | None:
    """Embedded ChromaDB only: every entry's metadata read from its own SQLite file.

    ChromaDB's ``get`` costs ~60 µs of CPU per entry with our ten metadata keys
    (5-6 s for 100k pages), while the same rows read read-only with ``sqlite3``
    cost ~11 µs. This is an optimisation over ChromaDB internals, so it is used
    only when everything checks out, else ``None`` sends the caller to the public
    API: a local persist folder; the expected tables; the write log applied to the
    metadata segment; and as many entries as ``collection.count()``. Reads go in
    short id-range chunks (a reader never holds ChromaDB's writer for long), and
    every disagreement found is re-read through the public API before it is
    reported (phase 2), so this path cannot invent an issue.
    """
    import sqlite3

    try:
        st = vectors.client.get_settings()
    except Exception:
        return None
    if not getattr(st, "is_persistent", False) or not getattr(st, "persist_directory", None):
        return None  # a Chroma server: only its API
    file = Path(st.persist_directory) / "chroma.sqlite3"
    if not file.is_file():
        return None
    try:
        expected = vectors.count(name)
        con = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute(
                "SELECT s.id, c.id FROM segments s JOIN collections c ON c.id = s.collection "
                "WHERE c.name = ? AND s.scope = 'METADATA'",
                (name,),
            ).fetchone()
            if row is None:
                return None
            seg, coll = row
            applied = con.execute(
                "SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (seg,)
            ).fetchone()
            logged = con.execute(
                "SELECT max(seq_id) FROM embeddings_queue WHERE topic LIKE ?", (f"%/{coll}",)
            ).fetchone()
            if logged and logged[0] is not None and (applied is None or applied[0] < logged[0]):
                return None  # writes not yet applied to the metadata segment
            top = con.execute(
                "SELECT max(id) FROM embeddings WHERE segment_id = ?", (seg,)
            ).fetchone()[0]
            out: dict[str, dict[str, Any]] = {}
            lo = 0
            while top is not None and lo <= top:
                rows = con.execute(
                    "SELECT e.embedding_id, m.key, m.string_value, m.int_value, m.float_value, "
                    "m.bool_value FROM embeddings e LEFT JOIN embedding_metadata m ON m.id = e.id "
                    "WHERE e.segment_id = ? AND e.id > ? AND e.id <= ?",
                    (seg, lo, lo + DIRECT_CHUNK),
                ).fetchall()
                for eid, key, sv, iv, fv, bv in rows:
                    meta = out.get(eid)
                    if meta is None:
                        meta = out[eid] = {}
                    if key is None:
                        continue
                    if sv is not None:
                        meta[key] = sv
                    elif iv is not None:
                        meta[key] = iv
                    elif fv is not None:
                        meta[key] = fv
                    elif bv is not None:
                        meta[key] = bool(bv)
                lo += DIRECT_CHUNK
        finally:
            con.close()
    except sqlite3.Error:
        log.debug("direct ChromaDB metadata read unavailable", exc_info=True)
        return None
    return out if len(out) == expected else None


def _sqlite_model_issues(snap: Snapshot, parts: Parts) -> list[Issue]:
    """SQLite vectors made by another model/dimension than the configured one."""
    if parts.expected_model is None:
        return []
    out: list[Issue] = []
    for v in snap.vectors:
        paper = snap.papers.get(v.paper_id)
        if paper is None:
            continue
        if v.model != parts.expected_model or (
            parts.expected_dimension is not None and v.dimension != parts.expected_dimension
        ):
            out.append(
                Issue(
                    "embedding_mismatch",
                    f"{v.kind} vector {v.chroma_id} was made by {v.model} ({v.dimension}-d), "
                    f"not the configured {parts.expected_model}",
                    "re-embed from the page text with the configured model (`--fix`)",
                    doc_id=paper.doc_id,
                    page=v.page if v.kind == "page" else None,
                    collection="sqlite",
                    entry_id=v.chroma_id,
                    detail={"scope": "sqlite_model", "model": v.model, "dimension": v.dimension},
                )
            )
    return out


def _unvectored_issues(snap: Snapshot) -> list[Issue]:
    out = []
    for paper_id, page in snap.unvectored_pages:
        p = snap.papers[paper_id]
        cid = page_vector_id(p.doc_id, page)
        out.append(
            Issue(
                "missing_in_chromadb",
                f"page {page} of {p.doc_id} has text but no vector in SQLite or ChromaDB",
                "re-embed the page text and add the vector (`--fix`)",
                doc_id=p.doc_id,
                page=page,
                collection=PAGES,
                entry_id=cid,
                detail={"reembed": True},
            )
        )
    return out


def _orphan_row_issues(snap: Snapshot) -> list[Issue]:
    out: list[Issue] = []
    for pid, paper_id, number in snap.orphan_pages:
        out.append(
            Issue(
                "orphaned_sqlite",
                f"pages row {pid} (page {number}) points at paper id {paper_id}, which is gone",
                "delete the row (`--fix`; kept in the quarantine folder)",
                page=number,
                entry_id=f"pages:{pid}",
                detail={"table": "pages", "row_id": pid, "paper_id": paper_id},
            )
        )
    for v in snap.vectors:
        if v.paper_id not in snap.papers:
            out.append(
                Issue(
                    "orphaned_sqlite",
                    f"vectors row {v.id} ({v.chroma_id}) points at paper id {v.paper_id}, "
                    "which is gone",
                    "delete the row (`--fix`, after the grace period)",
                    page=v.page if v.kind == "page" else None,
                    entry_id=f"vectors:{v.id}",
                    detail={
                        "table": "vectors",
                        "row_id": v.id,
                        "paper_id": v.paper_id,
                        "generation": v.generation,
                        "created_at": _iso(_dt(v.created_at)),
                    },
                )
            )
    for eid, paper_id, created in snap.orphan_edits:
        out.append(
            Issue(
                "orphaned_sqlite",
                f"field_edits row {eid} points at paper id {paper_id}, which is gone",
                "delete the row (`--fix`, after the grace period)",
                entry_id=f"field_edits:{eid}",
                detail={
                    "table": "field_edits",
                    "row_id": eid,
                    "paper_id": paper_id,
                    "created_at": created.isoformat() if created else None,
                },
            )
        )
    for jid, doc, status, updated in snap.orphan_jobs:
        out.append(
            Issue(
                "orphaned_sqlite",
                f"{status} job {jid} names paper {doc}, which is neither stored nor an "
                "audited deletion",
                "clear the job's paper reference, keeping the old value in its summary (`--fix`)",
                doc_id=doc,
                severity="low",
                entry_id=f"jobs:{jid}",
                detail={
                    "table": "jobs",
                    "row_id": jid,
                    "created_at": updated.isoformat() if updated else None,
                },
            )
        )
    return out


# --- SQLite integrity and files ----------------------------------------------------------------
def _integrity_issues(db: Database) -> list[Issue]:
    if not db.is_sqlite:
        return []
    out: list[Issue] = []
    with db.engine.connect() as conn:
        rows = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            for msg in rows[:50]:
                out.append(
                    Issue(
                        "sqlite_integrity",
                        f"integrity_check: {msg}",
                        "restore SQLite from the newest verified backup",
                        fixable=False,
                        entry_id="integrity_check",
                        detail={"message": msg},
                    )
                )
        fk = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        out.extend(_fts_issues(conn))
    for table, rowid, parent, _fkid in fk:
        if table in FK_CHILD_TABLES:
            continue  # reported as orphaned_sqlite with a paper-aware fix
        out.append(
            Issue(
                "sqlite_integrity",
                f"foreign_key_check: {table} row {rowid} points at a missing {parent} row",
                "delete the dangling row (`--fix`)"
                if table in FK_FIXABLE_TABLES
                else "inspect the row; restore from a backup if needed",
                fixable=table in FK_FIXABLE_TABLES,
                entry_id=f"{table}:{rowid}",
                detail={"table": table, "row_id": rowid, "parent": parent},
            )
        )
    return out


def _fts_issues(conn: Any) -> list[Issue]:
    """Papers keyword search cannot find, and index rows of papers that are gone."""
    out: list[Issue] = []
    for table, found in fts.coverage(conn).items():
        for pid in found["missing"][:STORED_ISSUES]:
            out.append(
                Issue(
                    "sqlite_integrity",
                    f"full-text index: paper {pid} is missing from {table} "
                    "(keyword search cannot find it)",
                    "re-index the paper (`--fix`)",
                    fixable=True,
                    entry_id=f"{table}:{pid}",
                    detail={"table": table, "paper_id": pid, "fts": "missing"},
                )
            )
        for rowid in found["orphans"][:STORED_ISSUES]:
            out.append(
                Issue(
                    "sqlite_integrity",
                    f"full-text index: {table} holds row {rowid} of a paper that is gone",
                    "remove it from the index (`--fix`"
                    + ("; the text index is rebuilt)" if table == "paper_bodies_fts" else ")"),
                    fixable=True,
                    entry_id=f"{table}:{rowid}",
                    detail={"table": table, "row_id": rowid, "fts": "orphan"},
                )
            )
    return out


def is_ignored_file(path: Path) -> bool:
    """OS junk and our own temporaries are never reported."""
    n = path.name
    return (
        n in JUNK_NAMES
        or n.startswith("._")
        or n.startswith(".incoming-")
        or n.endswith(".tmp")
        or n.endswith(".part")
    )


def _sha256_or_none(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def _file_issues(snap: Snapshot, files: FileStore, grace: int, hash_files: bool) -> list[Issue]:
    out: list[Issue] = []
    docs_by_sha: dict[str, list[PaperRow]] = {}
    for p in snap.papers.values():
        docs_by_sha.setdefault(p.file_sha256, []).append(p)
    damaged: list[tuple[str, list[str], int]] = []
    to_hash: list[tuple[str, list[str], int, Path]] = []
    for sha, papers in sorted(docs_by_sha.items()):
        docs = sorted(p.doc_id for p in papers)
        try:
            path = files.path_for(sha)
        except ValueError:
            out.append(
                Issue(
                    "pdf_missing",
                    f"paper {docs[0]} names an invalid file hash {sha!r}",
                    "re-upload the PDF",
                    doc_id=docs[0],
                    fixable=False,
                    entry_id=sha,
                    detail={"sha256": sha, "doc_ids": docs},
                )
            )
            continue
        if not path.exists():
            out.append(
                Issue(
                    "pdf_missing",
                    f"the PDF of {', '.join(docs)} ({sha[:12]}…) is missing",
                    "restore it from a backup copy (`--fix` does when one verifies)",
                    doc_id=docs[0],
                    entry_id=sha,
                    detail={"sha256": sha, "doc_ids": docs},
                )
            )
            continue
        size = path.stat().st_size
        if papers[0].file_size and size != papers[0].file_size:
            damaged.append((sha, docs, size))
        elif hash_files:
            to_hash.append((sha, docs, size, path))
    # hashlib releases the GIL on large buffers: hash on both cores.
    with ThreadPoolExecutor(2) as pool:
        digests = list(pool.map(lambda item: _sha256_or_none(item[3]), to_hash))
    for (sha, docs, size, _path), got in zip(to_hash, digests, strict=True):
        if got is None:
            out.append(
                Issue(
                    "pdf_missing",
                    f"the PDF of {', '.join(docs)} ({sha[:12]}…) vanished while it was read",
                    "restore it from a backup copy (`--fix` does when one verifies)",
                    doc_id=docs[0],
                    entry_id=sha,
                    detail={"sha256": sha, "doc_ids": docs},
                )
            )
        elif got != sha:
            damaged.append((sha, docs, size))
    for sha, docs, size in damaged:
        out.append(
            Issue(
                "pdf_checksum_mismatch",
                f"the PDF of {', '.join(docs)} no longer has SHA-256 {sha[:12]}…",
                "restore it from a backup copy (`--fix` does when one verifies; the damaged "
                "file is kept in the quarantine folder)",
                doc_id=docs[0],
                entry_id=sha,
                detail={"sha256": sha, "doc_ids": docs, "size": size},
            )
        )
    now = time.time()
    root = files.root
    if root.is_dir():
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                path = Path(dirpath) / n
                if is_ignored_file(path):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # removed while we looked
                if now - st.st_mtime < grace:
                    continue  # may be an ingest storing its file before the paper row
                stem = path.name[:-4] if path.name.endswith(".pdf") else None
                if stem and (stem in docs_by_sha or stem in snap.active_job_shas):
                    continue
                rel = str(path.relative_to(root))
                out.append(
                    Issue(
                        "pdf_unreferenced",
                        f"file {rel} ({st.st_size} bytes) is not referred to by any paper",
                        "move it to the quarantine folder (`--fix`; never deleted)",
                        entry_id=rel,
                        detail={"path": rel, "size": st.st_size},
                    )
                )
    return out


# --- the check ---------------------------------------------------------------------------------
def check(
    ctx_or_parts: Any,
    types: Iterable[str] | None = None,
    *,
    deep: bool = False,
    hash_files: bool = True,
    confirm: bool = True,
) -> CheckResult:
    """Find every disagreement; reads only (see the module docstring for the phases)."""
    parts = as_parts(ctx_or_parts)
    wanted = _validate_types(types)
    t0 = time.monotonic()
    started = datetime.now(UTC)
    scan_index = parts.vectors is not None and bool(wanted & set(INDEX_TYPES))
    # The SQLite snapshot, the ChromaDB scans and integrity_check are independent
    # reads: overlap them (SQLite and ChromaDB release the GIL while they work).
    with ThreadPoolExecutor(4) as pool:
        f_snap = pool.submit(_snapshot, parts.db)
        f_integ = pool.submit(_integrity_issues, parts.db) if "sqlite_integrity" in wanted else None
        f_scan = {
            name: pool.submit(_scan_chroma, parts.vectors, name, deep)
            for name in ((PAGES, PAPERS) if scan_index and parts.vectors is not None else ())
        }
        f_mine = {
            name: pool.submit(_sqlite_vectors, parts.db, KIND_OF[name])
            for name in (f_scan if deep else ())
        }
        snap = f_snap.result()
        scans = {name: f.result() for name, f in f_scan.items()}
        mine_all = {name: f.result() for name, f in f_mine.items()}
        integrity = f_integ.result() if f_integ is not None else []
    issues: list[Issue] = []
    counts: dict[str, int] = {
        "sqlite_papers": len(snap.papers),
        "sqlite_pages": snap.page_count,
        "sqlite_vectors": len(snap.vectors),
    }
    dropped = 0
    if scans:
        found: dict[str, list[Issue]] = {}
        for name, (have, embs) in scans.items():
            want = _want(snap, KIND_OF[name])
            found[name] = _compare_collection(
                name, want, have, embs, snap, None, mine_all.get(name)
            )
            counts[f"chromadb_{name}"] = len(have)
            counts[f"sqlite_{name}_vectors"] = len(want)
        if confirm and any(found.values()):
            found, dropped = _confirm(parts, found, deep)
        for name in (PAGES, PAPERS):
            issues.extend(found.get(name, []))
        issues.extend(_count_issues(parts, counts, confirm))
    issues.extend(integrity)
    issues.extend(_unvectored_issues(snap))
    issues.extend(_sqlite_model_issues(snap, parts))
    issues.extend(_orphan_row_issues(snap))
    if wanted & {"pdf_missing", "pdf_checksum_mismatch", "pdf_unreferenced"}:
        issues.extend(_file_issues(snap, parts.files, parts.grace_seconds, hash_files))
    issues = [i for i in issues if i.type in wanted]
    issues.sort(key=lambda i: (SEVERITIES.index(i.severity), i.type, i.key))
    return CheckResult(
        issues=issues,
        duration_seconds=time.monotonic() - t0,
        generation=snap.generation,
        checked_at=started,
        counts=counts,
        transient_dropped=dropped,
    )


def _partial_snapshot(db: Database, ids: set[str], docs: set[str]) -> Snapshot:
    """The rows the suspects need (their vectors, papers and traces), read in one transaction."""
    vectors: list[VecRow] = []
    papers: dict[int, PaperRow] = {}
    known: set[str] = set()
    v = Vector
    with db.read() as s:
        gen = s.execute(select(LibraryState.generation).where(LibraryState.id == 1)).scalar()
        id_list, doc_list = sorted(ids), sorted(docs)
        for start in range(0, len(id_list), 500):
            chunk = id_list[start : start + 500]
            vectors.extend(
                VecRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8] or 0, r[9])
                for r in s.execute(
                    select(
                        v.id,
                        v.paper_id,
                        v.kind,
                        v.page_number,
                        v.chroma_id,
                        v.checksum,
                        v.model,
                        v.dimension,
                        v.generation,
                        v.created_at,
                    ).where(v.chroma_id.in_(chunk))
                )
            )
        pids = sorted({row.paper_id for row in vectors})
        for start in range(0, max(len(pids), len(doc_list)), 500):
            pc, dc = pids[start : start + 500], doc_list[start : start + 500]
            for r in s.execute(
                select(
                    Paper.id,
                    Paper.doc_id,
                    Paper.title,
                    Paper.year,
                    Paper.file_sha256,
                    Paper.file_size,
                ).where(or_(Paper.id.in_(pc), Paper.doc_id.in_(dc)))
            ):
                papers[r[0]] = PaperRow(r[0], r[1], r[2], r[3], r[4], r[5] or 0)
            if dc:
                known.update(s.execute(select(Job.paper_id).where(Job.paper_id.in_(dc))).scalars())
                known.update(
                    s.execute(
                        select(AuditEntry.target).where(
                            AuditEntry.action == "delete_paper", AuditEntry.target.in_(dc)
                        )
                    ).scalars()
                )
    by_doc = {p.doc_id: p for p in papers.values()}
    return Snapshot(int(gen or 0), papers, by_doc, vectors, known, [], [], [], [], set(), 0)


def _confirm(
    parts: Parts, found: dict[str, list[Issue]], deep: bool
) -> tuple[dict[str, list[Issue]], int]:
    """Re-compare only the suspects while the writer is held: writes in flight drop out.

    Only the suspects' rows are re-read, so the barrier is held for milliseconds
    when a library has a few issues (and ingests wait no longer than that).
    """
    assert parts.vectors is not None
    out: dict[str, list[Issue]] = {}
    dropped = 0
    all_ids = {i.entry_id for issues in found.values() for i in issues if i.entry_id}
    docs = {i.doc_id for issues in found.values() for i in issues if i.doc_id}
    with parts.db.barrier():
        snap = _partial_snapshot(parts.db, all_ids, docs)
        for name, issues in found.items():
            ids = sorted({i.entry_id for i in issues if i.entry_id})
            if not ids:
                out[name] = []
                continue
            have, embs = _scan_chroma(parts.vectors, name, deep, ids)
            for meta_id, meta in have.items():  # traces of docs named only by the entry
                doc = _doc_of(meta_id, meta, KIND_OF[name])
                if doc not in docs:
                    docs.add(doc)
                    extra = _partial_snapshot(parts.db, set(), {doc})
                    snap.papers.update(extra.papers)
                    snap.by_doc.update(extra.by_doc)
                    snap.known_docs |= extra.known_docs
            idset = set(ids)
            want = {k: v for k, v in _want(snap, KIND_OF[name]).items() if k in idset}
            mine = _sqlite_vectors(parts.db, KIND_OF[name], ids) if deep else None
            out[name] = _compare_collection(name, want, have, embs, snap, ids, mine)
            dropped += len({i.key for i in issues} - {i.key for i in out[name]})
    return out, dropped


def _count_issues(parts: Parts, counts: dict[str, int], confirm: bool) -> list[Issue]:
    out: list[Issue] = []
    assert parts.vectors is not None
    for name in (PAGES, PAPERS):
        sq, ch = counts[f"sqlite_{name}_vectors"], counts[f"chromadb_{name}"]
        if sq != ch and confirm:
            with parts.db.barrier(), parts.db.read() as s:
                sq = _live_vector_count(s, KIND_OF[name])
                ch = parts.vectors.count(name)
        if sq != ch:
            out.append(
                Issue(
                    "count_mismatch",
                    f"{name}: SQLite holds {sq} vectors, ChromaDB {ch}",
                    "repair the missing/orphaned entries (`--fix`) or rebuild the index",
                    collection=name,
                    entry_id=name,
                    detail={"sqlite": sq, "chromadb": ch},
                )
            )
    return out


def _live_vector_count(s: Any, kind: str) -> int:
    return int(
        s.execute(
            select(func.count())
            .select_from(Vector)
            .join(Paper, Paper.id == Vector.paper_id)
            .where(Vector.kind == kind)
        ).scalar_one()
    )


def _validate_types(types: Iterable[str] | None) -> set[str]:
    if types is None:
        return set(ISSUE_TYPES)
    wanted = {t.strip() for t in types if t and t.strip()}
    unknown = wanted - set(ISSUE_TYPES)
    if unknown:
        raise ValueError(
            f"unknown issue type(s): {', '.join(sorted(unknown))}; known: {', '.join(ISSUE_TYPES)}"
        )
    return wanted or set(ISSUE_TYPES)


def check_parts(
    db: Database,
    vectors: VectorIndex | None,
    files: FileStore,
    *,
    grace_seconds: int = 3600,
    deep: bool = False,
    hash_files: bool = True,
) -> CheckResult:
    """The checker on explicit stores, e.g. a restored scratch copy (restore drill)."""
    return check(
        Parts(db=db, vectors=vectors, files=files, grace_seconds=grace_seconds),
        deep=deep,
        hash_files=hash_files,
    )


# --- history ---------------------------------------------------------------------------------
def record_check(db: Database, result: CheckResult, *, username: str | None = None) -> int:
    """Store a check in the history (``CheckRun(kind="check")``); returns its id."""
    data = result.to_dict(max_issues=STORED_ISSUES)
    data["issues_truncated"] = result.total_issues > STORED_ISSUES
    data["username"] = username
    with db.write(bump=False) as s:
        row = CheckRun(
            kind="check",
            status=result.overall_status,
            started_at=result.checked_at,
            finished_at=result.checked_at + timedelta(seconds=result.duration_seconds),
            total_issues=result.total_issues,
            result=json.loads(json.dumps(data, default=str)),
        )
        s.add(row)
        s.flush()
        return int(row.id)


def run_check(
    ctx_or_parts: Any,
    types: Iterable[str] | None = None,
    *,
    deep: bool = False,
    hash_files: bool = True,
    username: str | None = None,
) -> dict[str, Any]:
    """Check and record (the scheduled daily check, the API and the CLI use this)."""
    parts = as_parts(ctx_or_parts)
    result = check(parts, types, deep=deep, hash_files=hash_files)
    run_id = record_check(parts.db, result, username=username)
    out = result.to_dict()
    out["run_id"] = run_id
    return out


check_and_record = run_check


def last_check(db: Database) -> CheckRun | None:
    with db.read() as s:
        return s.execute(
            select(CheckRun)
            .where(CheckRun.kind == "check", CheckRun.status != "running")
            .order_by(CheckRun.started_at.desc(), CheckRun.id.desc())
            .limit(1)
        ).scalar_one_or_none()


def history(db: Database, *, limit: int = 20, kind: str | None = None) -> list[dict[str, Any]]:
    """Past checks and fixes, newest first (without the full issue lists)."""
    kinds = (kind,) if kind else ("check", "fix")
    with db.read() as s:
        rows = (
            s.execute(
                select(CheckRun)
                .where(CheckRun.kind.in_(kinds))
                .order_by(CheckRun.started_at.desc(), CheckRun.id.desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
    out = []
    for r in rows:
        res = dict(r.result or {})
        item: dict[str, Any] = {
            "id": r.id,
            "kind": r.kind,
            "status": r.status,
            "started_at": _dt(r.started_at).isoformat() if r.started_at else None,
            "finished_at": _dt(r.finished_at).isoformat() if r.finished_at else None,
            "total_issues": r.total_issues,
            "username": res.get("username"),
        }
        if r.kind == "check":
            item["duration_seconds"] = res.get("duration_seconds")
            item["issues_by_type"] = res.get("issues_by_type", {})
            item["issues_by_severity"] = res.get("issues_by_severity", {})
        else:
            item["fixed_count"] = res.get("fixed_count", 0)
            item["failed_count"] = res.get("failed_count", 0)
            item["dry_run"] = res.get("dry_run", False)
            item["quarantine"] = res.get("quarantine")
        out.append(item)
    return out


def summary(ctx_or_parts: Any) -> dict[str, Any]:
    """Counts only (well under a second): paper and vector counts, the last check."""
    parts = as_parts(ctx_or_parts)
    with parts.db.read() as s:
        sqlite_papers = int(s.execute(select(func.count()).select_from(Paper)).scalar_one())
        # Index-only counts (orphaned vector rows are the full check's business).
        vec = dict(s.execute(select(Vector.kind, func.count()).group_by(Vector.kind)).all())
    chroma = {n: parts.vectors.count(n) for n in (PAGES, PAPERS)} if parts.vectors else {}
    counts_match = bool(chroma) and (
        chroma.get(PAPERS) == vec.get("paper", 0) and chroma.get(PAGES) == vec.get("page", 0)
    )
    last = last_check(parts.db)
    last_view = None
    if last is not None:
        last_view = {
            "id": last.id,
            "started_at": _dt(last.started_at).isoformat() if last.started_at else None,
            "overall_status": last.status,
            "total_issues": last.total_issues,
        }
    if not counts_match:
        status = "degraded"
    elif last is None:
        status = "unknown"
    else:
        status = last.status
    return {
        "status": status,
        "sqlite_papers": sqlite_papers,
        "chromadb_papers": int(chroma.get(PAPERS, 0)),
        "counts_match": counts_match,
        "total_issues": int(last.total_issues) if last is not None else 0,
        "last_check": last_view,
    }


# --- fixing ----------------------------------------------------------------------------------
@dataclass
class FixReport:
    fixed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = True
    check_run_id: int | None = None
    fix_run_id: int | None = None
    quarantine: str | None = None
    rebuilt: dict[str, int] | None = None

    def to_dict(self, *, max_items: int | None = None) -> dict[str, Any]:
        return {
            "fixed_count": len(self.fixed),
            "failed_count": len(self.failed),
            "fixed": list(self.fixed[:max_items]),
            "failed": list(self.failed[:max_items]),
            "dry_run": self.dry_run,
            "check_run_id": self.check_run_id,
            "fix_run_id": self.fix_run_id,
            "quarantine": self.quarantine,
            "rebuilt": self.rebuilt,
        }


class _Fixer:
    """Applies the safe repairs for one fresh check (see the module docstring)."""

    def __init__(self, parts: Parts, dry_run: bool, run_tag: str) -> None:
        self.p = parts
        self.dry_run = dry_run
        self.tag = run_tag
        self.now = datetime.now(UTC)
        self.current_gen = parts.db.generation()
        self._qdir: Path | None = None
        self.text_rebuilt = False  # the text index is rebuilt at most once per fix

    # quarantine: everything removed can be put back
    @property
    def qdir(self) -> Path:
        if self._qdir is None:
            base = self.p.quarantine_dir or (self.p.files.root.parent / "quarantine")
            self._qdir = base / self.tag
            self._qdir.mkdir(parents=True, exist_ok=True)
        return self._qdir

    def _dump(self, name: str, record: dict[str, Any]) -> None:
        with open(self.qdir / f"{name}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def deletable(self, gen: int | None, age_s: float | None) -> tuple[bool, str]:
        limit = self.current_gen - self.p.in_flight_generations
        if gen is not None and gen < limit:
            return (
                True,
                f"generation {gen} < current {self.current_gen} - {self.p.in_flight_generations}",
            )
        if age_s is not None and age_s >= self.p.grace_seconds:
            return True, f"older than the grace period ({int(age_s)} s >= {self.p.grace_seconds} s)"
        return False, (
            f"deferred: may be a write in flight (generation {gen}, current {self.current_gen}; "
            f"age {'unknown' if age_s is None else int(age_s)} s < grace {self.p.grace_seconds} s)"
        )

    def age(self, when: datetime | None) -> float | None:
        return None if when is None else (self.now - when).total_seconds()


def _first_seen(
    db: Database, keys: set[str], days: int = 30, runs: int = 50
) -> dict[str, datetime]:
    """When a recorded check first reported each issue key (for entries with no timestamp)."""
    if not keys:
        return {}
    since = datetime.now(UTC) - timedelta(days=days)
    seen: dict[str, datetime] = {}
    with db.read() as s:
        rows = s.execute(
            select(CheckRun.started_at, CheckRun.result)
            .where(CheckRun.kind == "check", CheckRun.started_at >= since)
            .order_by(CheckRun.started_at.desc())
            .limit(runs)
        ).all()
    for started, result in rows:
        when = _dt(started)
        if when is None:
            continue
        for issue in (result or {}).get("issues", []):
            k = issue.get("key")
            if k in keys and (k not in seen or when < seen[k]):
                seen[k] = when
    return seen


def fix(
    ctx_or_parts: Any,
    types: Iterable[str] | None = None,
    rebuild: bool = False,
    *,
    dry_run: bool = True,
    username: str | None = None,
    deep: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> FixReport:
    """Run a fresh check, then apply the safe repairs (only when ``dry_run`` is False)."""
    parts = as_parts(ctx_or_parts)
    wanted = _validate_types(types)
    step = progress or (lambda _name, _frac: None)
    step("check", 0.0)
    before = check(parts, deep=deep)
    check_id = record_check(parts.db, before, username=username)
    issues = [i for i in before.issues if i.type in wanted]
    tag = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    fx = _Fixer(parts, dry_run, tag)
    report = FixReport(dry_run=dry_run, check_run_id=check_id)
    first = _first_seen(
        parts.db, {i.key for i in issues if i.type in ("orphaned_chromadb", "missing_in_sqlite")}
    )

    def ok(issue: Issue, action: str, **extra: Any) -> None:
        report.fixed.append({**_brief(issue), "action": action, **extra})

    def bad(issue: Issue, reason: str, **extra: Any) -> None:
        report.failed.append({**_brief(issue), "reason": reason, **extra})

    if rebuild:
        if parts.vectors is None:
            report.failed.append({"type": "rebuild", "reason": "no vector index in this process"})
        elif dry_run:
            report.fixed.append(
                {"type": "rebuild", "action": "would rebuild the index from SQLite"}
            )
        else:
            step("rebuild", 0.1)
            # Entries SQLite lacks vanish with the old collections: keep a copy first.
            for name in (PAGES, PAPERS):
                stray = [
                    i.entry_id
                    for i in before.issues
                    if i.type in ("orphaned_chromadb", "missing_in_sqlite")
                    and i.collection == name
                    and i.entry_id
                ]
                if stray:
                    _quarantine_entries(parts, fx, name, stray)
            report.rebuilt = rebuild_index(
                parts,
                lambda name, done, total: step(f"rebuild {name}", 0.1 + 0.6 * done / max(total, 1)),
            )
            report.fixed.append({"type": "rebuild", "action": "rebuilt", "counts": report.rebuilt})
            # A rebuild repairs every index issue at once; check again for the rest.
            after = check(parts, deep=deep)
            issues = [i for i in after.issues if i.type in wanted]

    by_type: dict[str, list[Issue]] = {}
    for i in issues:
        by_type.setdefault(i.type, []).append(i)

    # 1. Vectors and metadata from SQLite (re-embedding where SQLite has text only).
    upserts: dict[str, list[Issue]] = {}
    reembed: list[Issue] = []
    for t in ("missing_in_chromadb", "embedding_mismatch", "metadata_mismatch"):
        for i in by_type.get(t, []):
            if i.detail.get("reembed") or i.detail.get("scope") in (
                "sqlite_model",
                "sqlite_checksum",
            ):
                reembed.append(i)
            elif parts.vectors is None:
                bad(i, "no vector index in this process")
            else:
                upserts.setdefault(i.collection or PAGES, []).append(i)
    step("vectors", 0.7)
    if reembed:
        _fix_reembed(parts, fx, reembed, ok, bad)
    for name, items in upserts.items():
        ids = sorted({i.entry_id for i in items if i.entry_id})
        if dry_run:
            for i in items:
                ok(i, f"would upsert {i.entry_id} into {name} from SQLite")
            continue
        done = _upsert_from_sqlite(parts, name, ids)
        for i in items:
            if i.entry_id in done:
                ok(i, f"upserted {i.entry_id} into {name} from SQLite")
            else:
                bad(i, "SQLite no longer has this vector")

    # 2. Orphaned ChromaDB entries (both kinds) under the in-flight rule.
    step("orphans", 0.8)
    to_delete: dict[str, list[Issue]] = {}
    for t in ("orphaned_chromadb", "missing_in_sqlite"):
        for i in by_type.get(t, []):
            seen = first.get(i.key)
            can, why = fx.deletable(i.detail.get("generation"), fx.age(seen))
            if not can:
                bad(i, why, deferred=True)
            elif parts.vectors is None:
                bad(i, "no vector index in this process")
            else:
                to_delete.setdefault(i.collection or PAGES, []).append(i)
                i.detail["why"] = why
    for name, items in to_delete.items():
        if dry_run:
            for i in items:
                ok(i, f"would delete {i.entry_id} from {name} ({i.detail['why']})")
            continue
        removed = _delete_chroma(parts, fx, name, [i.entry_id for i in items if i.entry_id])
        for i in items:
            if i.entry_id in removed:
                ok(i, f"deleted {i.entry_id} from {name}, kept in quarantine ({i.detail['why']})")
            else:
                bad(i, "entry no longer orphaned when re-checked under the write barrier")

    # 3. Orphaned SQLite rows and dangling foreign keys.
    for i in by_type.get("orphaned_sqlite", []) + by_type.get("sqlite_integrity", []):
        if not i.fixable:
            bad(i, "not safely repairable automatically: " + i.suggested_fix)
            continue
        if i.detail.get("fts"):
            _fix_fts(parts, fx, i, ok, bad)
            continue
        _fix_row(parts, fx, i, ok, bad)

    # 4. Files: restore verified copies from backups; move unreferenced files aside.
    step("files", 0.9)
    for i in by_type.get("pdf_missing", []) + by_type.get("pdf_checksum_mismatch", []):
        if not i.fixable:
            bad(i, "not safely repairable automatically: " + i.suggested_fix)
            continue
        _fix_pdf(parts, fx, i, ok, bad)
    for i in by_type.get("pdf_unreferenced", []):
        _fix_unreferenced(parts, fx, i, ok, bad)

    # 5. Counts follow from the repairs above.
    if by_type.get("count_mismatch"):
        after_counts = {}
        if parts.vectors is not None and not dry_run:
            with parts.db.read() as s:
                after_counts = {
                    n: (_live_vector_count(s, KIND_OF[n]), parts.vectors.count(n))
                    for n in (PAGES, PAPERS)
                }
        for i in by_type["count_mismatch"]:
            name = i.collection or PAGES
            if dry_run:
                ok(i, "would follow from the repairs above")
            elif name in after_counts and after_counts[name][0] == after_counts[name][1]:
                ok(i, f"counts agree after the repairs ({after_counts[name][0]})")
            else:
                bad(i, f"counts still differ after the repairs: {after_counts.get(name)}")

    report.quarantine = str(fx._qdir) if fx._qdir is not None else None
    step("done", 1.0)
    if not dry_run:
        report.fix_run_id = _record_fix(parts, report, sorted(wanted), rebuild, username)
        if username and parts.audit is not None:
            parts.audit(
                "consistency_fix",
                username=username,
                target=f"check_run:{report.fix_run_id}",
                detail={
                    "fixed_count": len(report.fixed),
                    "failed_count": len(report.failed),
                    "types": sorted(wanted),
                    "rebuild": rebuild,
                },
            )
    return report


def _brief(i: Issue) -> dict[str, Any]:
    return {
        "type": i.type,
        "severity": i.severity,
        "doc_id": i.doc_id,
        "page": i.page,
        "collection": i.collection,
        "entry_id": i.entry_id,
        "description": i.description,
    }


def _record_fix(
    parts: Parts, report: FixReport, types: list[str], rebuild: bool, username: str | None
) -> int:
    data = report.to_dict(max_items=STORED_ISSUES)
    data.update({"types": types, "rebuild": rebuild, "username": username})
    with parts.db.write(bump=False) as s:
        row = CheckRun(
            kind="fix",
            status="completed" if not report.failed else "partial",
            finished_at=datetime.now(UTC),
            total_issues=len(report.fixed) + len(report.failed),
            result=json.loads(json.dumps(data, default=str)),
        )
        s.add(row)
        s.flush()
        return int(row.id)


def _upsert_from_sqlite(parts: Parts, name: str, ids: list[str]) -> set[str]:
    """Write these ids into ChromaDB from SQLite (vector + metadata), under the barrier."""
    from refserver.storage.library import upsert_rows

    assert parts.vectors is not None
    done: set[str] = set()
    with parts.db.barrier():
        for start in range(0, len(ids), 2000):
            chunk = ids[start : start + 2000]
            with parts.db.read() as s:
                rows = s.execute(
                    select(Vector, Paper)
                    .join(Paper, Paper.id == Vector.paper_id)
                    .where(Vector.chroma_id.in_(chunk), Vector.kind == KIND_OF[name])
                ).all()
            if not rows:
                continue
            upsert_rows(parts.vectors, name, rows)
            done.update(v.chroma_id for v, _ in rows)
    return done


def _delete_chroma(parts: Parts, fx: _Fixer, name: str, ids: list[str]) -> set[str]:
    """Delete orphans still orphaned under the barrier; dump them to the quarantine first."""
    assert parts.vectors is not None
    removed: set[str] = set()
    with parts.db.barrier():
        with parts.db.read() as s:
            present = set(
                s.execute(
                    select(Vector.chroma_id)
                    .join(Paper, Paper.id == Vector.paper_id)
                    .where(Vector.chroma_id.in_(ids))
                ).scalars()
            )
        still = [i for i in ids if i not in present]
        gone = _quarantine_entries(parts, fx, name, still)
        if gone:
            parts.vectors.delete(name, ids=gone)
            removed.update(gone)
    return removed


def _quarantine_entries(parts: Parts, fx: _Fixer, name: str, ids: list[str]) -> list[str]:
    """Write these ChromaDB entries (id, metadata, embedding) to the quarantine; returns
    the ids found, so a removal can be undone by upserting the JSON lines back."""
    assert parts.vectors is not None
    found: list[str] = []
    for start in range(0, len(ids), 2000):
        got = parts.vectors.get(
            name, ids[start : start + 2000], include=["embeddings", "metadatas"]
        )
        embs = got.get("embeddings")
        for k, cid in enumerate(got["ids"]):
            fx._dump(
                f"chromadb-{name}",
                {
                    "id": cid,
                    "metadata": got["metadatas"][k],
                    "embedding": [float(x) for x in embs[k]] if embs is not None else None,
                },
            )
            found.append(cid)
    return found


def _fix_row(
    parts: Parts,
    fx: _Fixer,
    i: Issue,
    ok: Callable[..., None],
    bad: Callable[..., None],
) -> None:
    table = i.detail.get("table")
    row_id = i.detail.get("row_id")
    if table == "vectors":
        can, why = fx.deletable(i.detail.get("generation"), fx.age(_dt(i.detail.get("created_at"))))
    elif table in ("field_edits", "jobs"):
        can, why = fx.deletable(None, fx.age(_dt(i.detail.get("created_at"))))
    elif table == "pages":
        can, why = True, "a committed page without its paper cannot be in flight"
    elif table in FK_FIXABLE_TABLES:
        can, why = True, "dangling foreign key of a deleted parent"
    else:
        bad(i, f"no safe repair for table {table}")
        return
    if not can:
        bad(i, why, deferred=True)
        return
    if fx.dry_run:
        verb = "clear paper reference of" if table == "jobs" else "delete"
        ok(i, f"would {verb} {table} row {row_id} ({why})")
        return
    with parts.db.write() as s:
        conn = s.connection()
        if table == "jobs":
            job = s.get(Job, row_id)
            if job is None or job.paper_id is None:
                bad(i, "job row changed meanwhile")
                return
            if s.execute(select(Paper.id).where(Paper.doc_id == job.paper_id)).first():
                bad(i, "the paper exists again")
                return
            fx._dump("sqlite-rows", {"table": "jobs", "row_id": row_id, "paper_id": job.paper_id})
            summary_ = dict(job.result_summary or {})
            summary_["orphaned_paper_id"] = job.paper_id
            job.result_summary = summary_
            job.paper_id = None
            ok(i, f"cleared jobs row {row_id} paper reference (kept in its summary)")
            return
        # Still orphaned? (a paper with that id may have been added since the check)
        if table != "api_tokens":
            pid = i.detail.get("paper_id")
            if s.execute(select(Paper.id).where(Paper.id == pid)).first():
                bad(i, "its paper exists again")
                return
        # Every table here has an INTEGER primary key ``id`` (SQLite's rowid, which
        # foreign_key_check reports); ``table`` comes from our own fixed lists.
        tbl = Table(table, MetaData(), autoload_with=conn)
        rec = conn.execute(select(tbl).where(tbl.c.id == row_id))
        cols = list(rec.keys())
        row = rec.fetchone()
        if row is None:
            bad(i, "row already gone")
            return
        values = {
            c: (v.hex() if isinstance(v, bytes) else v) for c, v in zip(cols, row, strict=True)
        }
        fx._dump("sqlite-rows", {"table": table, "row_id": row_id, "values": values})
        conn.execute(tbl.delete().where(tbl.c.id == row_id))
    ok(i, f"deleted {table} row {row_id}, kept in quarantine ({why})")


def _fix_fts(
    parts: Parts,
    fx: _Fixer,
    i: Issue,
    ok: Callable[..., None],
    bad: Callable[..., None],
) -> None:
    """Re-index a paper the index lacks; drop index rows of papers that are gone."""
    table, kind = i.detail["table"], i.detail["fts"]
    rowid = i.detail.get("paper_id") if kind == "missing" else i.detail.get("row_id")
    if fx.dry_run:
        ok(i, f"would {'re-index paper' if kind == 'missing' else 'unindex row'} {rowid}")
        return
    if kind == "orphan" and table == "paper_bodies_fts" and fx.text_rebuilt:
        ok(i, "removed by the rebuild of the text index")
        return
    with parts.db.write() as s:
        # Re-checked for this row only, under the writer, before anything changes.
        indexed = fts.is_indexed(s.connection(), table, rowid)
        paper = s.get(Paper, rowid)
        if indexed != (kind == "orphan"):
            bad(i, "the index changed meanwhile")
            return
        if kind == "missing":
            if paper is None:
                bad(i, "the paper is gone")
                return
            if table == "papers_fts":
                fts.index_paper(s, paper)
            else:
                fts.index_body(s, paper.id)
            ok(i, f"re-indexed paper {rowid} in {table}")
        elif paper is not None:
            bad(i, "its paper exists again")
        elif table == "papers_fts":
            s.execute(text("DELETE FROM papers_fts WHERE rowid = :r"), {"r": rowid})
            ok(i, f"removed row {rowid} from papers_fts")
        else:
            # An external-content row can only be unindexed with its old text,
            # which went with the paper: rebuild the text index from the rows.
            fts.rebuild_text(s)
            fx.text_rebuilt = True
            ok(i, "removed by a rebuild of the text index")


def _backup_copy(parts: Parts, sha: str, dest_dir: Path) -> Path | None:
    """A copy of ``sha`` from the backups' content-addressed files, verified."""
    for root in parts.backup_file_dirs:
        for suffix in ("", ".zst", ".gz"):
            cand = root / sha[:2] / f"{sha}.pdf{suffix}"
            if not cand.is_file():
                continue
            fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".incoming-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    if suffix == ".zst":
                        import zstandard

                        with open(cand, "rb") as f:
                            zstandard.ZstdDecompressor().copy_stream(f, out)
                    elif suffix == ".gz":
                        with gzip.open(cand, "rb") as f:
                            shutil.copyfileobj(f, out)
                    else:
                        with open(cand, "rb") as f:
                            shutil.copyfileobj(f, out)
                if sha256_file(Path(tmp)) == sha:
                    return Path(tmp)
            except Exception:
                log.warning("backup copy %s unreadable", cand, exc_info=True)
            Path(tmp).unlink(missing_ok=True)
    return None


def _fix_pdf(
    parts: Parts, fx: _Fixer, i: Issue, ok: Callable[..., None], bad: Callable[..., None]
) -> None:
    sha = str(i.detail.get("sha256"))
    parts.files.root.mkdir(parents=True, exist_ok=True)
    copy = _backup_copy(parts, sha, parts.files.root)
    if copy is None:
        bad(i, "no backup copy with this SHA-256 was found; restore from an offsite backup")
        return
    try:
        if fx.dry_run:
            ok(i, "would restore the PDF from a verified backup copy")
            return
        with parts.db.barrier():
            target = parts.files.path_for(sha)
            if target.exists():
                if sha256_file(target) == sha:
                    ok(i, "the PDF is intact again")
                    return
                aside = fx.qdir / "damaged" / target.name
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(target), aside)
            parts.files.put(copy, sha)
        ok(i, "restored the PDF from a verified backup copy")
    finally:
        copy.unlink(missing_ok=True)


def _fix_unreferenced(
    parts: Parts, fx: _Fixer, i: Issue, ok: Callable[..., None], bad: Callable[..., None]
) -> None:
    rel = str(i.detail.get("path"))
    if fx.dry_run:
        ok(i, f"would move {rel} to the quarantine folder")
        return
    src = parts.files.root / rel
    with parts.db.barrier():
        stem = src.name[:-4] if src.name.endswith(".pdf") else None
        if stem:
            with parts.db.read() as s:
                used = s.execute(select(Paper.id).where(Paper.file_sha256 == stem)).first()
                active = s.execute(
                    select(Job.id).where(Job.file_sha256 == stem, Job.status.in_(JOB_ACTIVE))
                ).first()
            if used or active:
                bad(i, "a paper or an ingest refers to it now")
                return
        if not src.exists():
            bad(i, "file already gone")
            return
        dest = fx.qdir / "files" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), dest)
        fx._dump("files", {"moved_from": rel, "to": str(dest)})
    ok(i, f"moved {rel} to {dest}")


def _fix_reembed(
    parts: Parts,
    fx: _Fixer,
    items: list[Issue],
    ok: Callable[..., None],
    bad: Callable[..., None],
) -> None:
    """Re-embed pages (and paper vectors) from SQLite text with the configured model."""
    if parts.embedder is None:
        for i in items:
            bad(i, "no embedding model available to re-embed")
        return
    if fx.dry_run:
        for i in items:
            ok(i, f"would re-embed {i.entry_id} from SQLite text")
        return
    embedder = parts.embedder()
    by_doc: dict[str, list[Issue]] = {}
    for i in items:
        if i.doc_id:
            by_doc.setdefault(i.doc_id, []).append(i)
    for doc, its in by_doc.items():
        try:
            _reembed_paper(parts, embedder, doc, its)
        except Exception as exc:
            log.exception("re-embedding %s failed", doc)
            for i in its:
                bad(i, f"re-embedding failed: {exc}")
            continue
        for i in its:
            ok(i, f"re-embedded {i.entry_id} with {embedder.name} and synced it to ChromaDB")


def _reembed_paper(parts: Parts, embedder: Any, doc_id: str, items: list[Issue]) -> None:
    from refserver.embedding.model import checksum, encode_vector, mean_vector
    from refserver.ingest.extract import chunk_words
    from refserver.storage.library import chroma_metadata

    pages_wanted = {i.page for i in items if i.page is not None}
    paper_wanted = any(i.page is None for i in items)
    with parts.db.barrier():
        with parts.db.write() as s:
            gen = s.info["generation"]
            paper = s.execute(select(Paper).where(Paper.doc_id == doc_id)).scalar_one()
            pages = {
                p.page_number: p
                for p in s.execute(select(Page).where(Page.paper_id == paper.id)).scalars()
            }
            rows = {
                (v.kind, v.page_number): v
                for v in s.execute(select(Vector).where(Vector.paper_id == paper.id)).scalars()
            }

            def put(kind: str, number: int, vec: np.ndarray) -> None:
                blob = encode_vector(vec, parts.vector_storage)
                row = rows.get((kind, number))
                if row is None:
                    row = Vector(
                        paper_id=paper.id,
                        kind=kind,
                        page_number=number,
                        chroma_id=page_vector_id(doc_id, number) if kind == "page" else doc_id,
                    )
                    s.add(row)
                    rows[(kind, number)] = row
                row.model = embedder.name
                row.model_revision = embedder.revision
                row.dimension = int(vec.shape[-1])
                row.vector = blob
                row.dtype = parts.vector_storage
                row.checksum = checksum(blob)
                row.generation = gen

            for number in sorted(pages_wanted):
                chunks = chunk_words(pages[number].text, size=parts.chunk_words)
                if chunks:
                    put("page", number, mean_vector(embedder.embed(chunks)))
            if paper_wanted:
                page_vecs = [
                    decode_vector(r.vector, r.dtype, r.dimension)
                    for (k, _n), r in sorted(rows.items())
                    if k == "page" and r.model == embedder.name
                ]
                head = " ".join(x for x in (paper.title, paper.abstract) if x)
                parts_ = list(page_vecs)
                if head:
                    parts_.append(embedder.embed([head])[0])
                if parts_:
                    put("paper", 0, mean_vector(np.vstack(parts_)))
            s.flush()
            changed = [rows[k] for k in rows if k[0] == "page" and k[1] in pages_wanted]
            if paper_wanted and ("paper", 0) in rows:
                changed.append(rows[("paper", 0)])
            payload = [
                (
                    COLLECTION_OF[r.kind],
                    r.chroma_id,
                    decode_vector(r.vector, r.dtype, r.dimension),
                    chroma_metadata(paper, r),
                )
                for r in changed
            ]
        if parts.vectors is not None:
            for name in (PAGES, PAPERS):
                sel = [x for x in payload if x[0] == name]
                if sel:
                    parts.vectors.upsert(
                        name,
                        [x[1] for x in sel],
                        np.vstack([x[2] for x in sel]),
                        [x[3] for x in sel],
                    )


def rebuild_index(
    parts_or_ctx: Any, progress: Callable[[str, int, int], None] | None = None
) -> dict[str, int]:
    """Drop both collections and rebuild them from SQLite's vectors, holding the writer."""
    from refserver.storage.library import upsert_rows

    parts = as_parts(parts_or_ctx)
    if parts.vectors is None:
        raise RuntimeError("no vector index in this process")
    counts: dict[str, int] = {}
    with parts.db.barrier():
        for name in (PAGES, PAPERS):
            kind = KIND_OF[name]
            with parts.db.read() as s:
                total = _live_vector_count(s, kind)
            parts.vectors.reset_collection(name)
            done, last = 0, 0
            while True:
                with parts.db.read() as s:
                    rows = s.execute(
                        select(Vector, Paper)
                        .join(Paper, Paper.id == Vector.paper_id)
                        .where(Vector.kind == kind, Vector.id > last)
                        .order_by(Vector.id)
                        .limit(4000)
                    ).all()
                if not rows:
                    break
                upsert_rows(parts.vectors, name, rows)
                done += len(rows)
                last = rows[-1][0].id
                if progress:
                    progress(name, done, total)
            counts[name] = done
    return counts


# --- as jobs (DESIGN.md §7): progress on the job record, the outcome in its summary ---------
JOB_KIND = "consistency"
JOB_SUMMARY_ITEMS = 200  # issues / repairs kept in a job's summary (the history has more)


def submit_job(ctx: Any, action: str, params: dict[str, Any], username: str | None) -> str:
    """Queue a check or fix (``action``) as a job; returns its id."""
    if action not in ("check", "fix"):
        raise ValueError("action must be check or fix")
    _validate_types(params.get("types"))
    job_id = ctx.jobs.create(
        kind=JOB_KIND,
        filename=action,
        params={"action": action, **params},
        created_by=username,
    )
    ctx.queue.enqueue(job_id, "normal")
    return job_id


def run_job(ctx: Any, job_id: str) -> None:
    """Job handler: a failure is recorded on the job, never raised into the worker."""
    job = ctx.jobs.start(job_id)
    if job is None:
        return
    p = dict(job.params or {})

    def progress(name: str, frac: float) -> None:
        ctx.jobs.update(job_id, current_step=name, progress=round(100 * frac, 1))

    try:
        if p.get("action") == "fix":
            report = fix(
                ctx,
                p.get("types"),
                bool(p.get("rebuild")),
                dry_run=bool(p.get("dry_run")),
                deep=bool(p.get("deep")),
                username=job.created_by,
                progress=progress,
            )
            out = report.to_dict(max_items=JOB_SUMMARY_ITEMS)
        else:
            progress("check", 0.0)
            out = run_check(
                ctx,
                p.get("types"),
                deep=bool(p.get("deep")),
                hash_files=bool(p.get("hash_files", True)),
                username=job.created_by,
            )
            out["issues"] = out["issues"][:JOB_SUMMARY_ITEMS]
    except Exception as exc:
        log.exception("consistency job %s failed", job_id)
        ctx.jobs.finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return
    ctx.jobs.finish(job_id, "completed", summary=json.loads(json.dumps(out, default=str)))


def register_jobs(ctx: Any) -> None:
    ctx.queue.register(JOB_KIND, lambda job_id: run_job(ctx, job_id))


__all__ = [
    "ISSUE_TYPES",
    "CheckResult",
    "FixReport",
    "Issue",
    "Parts",
    "check",
    "check_and_record",
    "check_parts",
    "fix",
    "history",
    "rebuild_index",
    "record_check",
    "run_check",
    "summary",
]
