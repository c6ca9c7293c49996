"""The library's write path: papers, pages, vectors, files and the index together.

SQLite is written first (the truth), then ChromaDB, both while holding the
single writer, so a unified backup taken at the barrier sees the two agree.
A crash between the two leaves vectors SQLite has and ChromaDB lacks, which the
consistency checker (and a resumed ingest) re-adds from SQLite.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from refserver.embedding.model import checksum, decode_vectors, encode_vector
from refserver.storage import fts
from refserver.storage.db import Database
from refserver.storage.files import FileStore
from refserver.storage.models import FieldEdit, Page, Paper, Vector
from refserver.storage.vectors import PAGES, PAPERS, VectorIndex, page_vector_id

log = logging.getLogger(__name__)

EDITABLE_FIELDS = ("title", "authors", "year", "journal", "doi", "abstract", "keywords", "tags")


def normalize_title(title: str | None) -> str | None:
    """Case-, accent- and punctuation-folded title used to spot duplicates."""
    if not title:
        return None
    t = unicodedata.normalize("NFKD", title)
    t = "".join(c for c in t if not unicodedata.combining(c)).lower()
    t = re.sub(r"[^\w]+", " ", t).strip()
    return t[:512] or None


def first_author_key(authors: list[str] | None) -> str | None:
    if not authors:
        return None
    name = normalize_title(authors[0]) or ""
    parts = name.split()
    return parts[-1] if parts else None


@dataclass
class PageInput:
    number: int
    text: str
    source: str
    quality: float
    vector: np.ndarray | None = None


@dataclass
class PaperInput:
    """Everything an ingest produced, written in one transaction."""

    file_sha256: str
    file_size: int
    filename: str
    page_count: int
    pages: list[PageInput]
    metadata: dict[str, Any]
    field_sources: dict[str, str]
    paper_vector: np.ndarray | None
    model: str
    model_revision: str
    processing_time: float = 0.0
    doc_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Library:
    def __init__(
        self,
        db: Database,
        files: FileStore,
        vectors: VectorIndex | None,
        *,
        vector_storage: str = "float32",
    ) -> None:
        self.db = db
        self.files = files
        self.vectors = vectors
        self.vector_storage = vector_storage  # encoding of new Vector rows (settings)

    # --- reads -------------------------------------------------------------------
    def find_by_sha(self, sha256: str) -> str | None:
        with self.db.read() as s:
            return s.execute(
                select(Paper.doc_id).where(Paper.file_sha256 == sha256).limit(1)
            ).scalar_one_or_none()

    def get(self, s: Session, doc_id: str, *, with_pages: bool = False) -> Paper | None:
        q = select(Paper).where(Paper.doc_id == doc_id)
        if with_pages:
            q = q.options(selectinload(Paper.pages))
        return s.execute(q).scalar_one_or_none()

    def find_duplicate(
        self, s: Session, doi: str | None, title: str | None, authors: list[str]
    ) -> tuple[str, str] | None:
        """(doc_id, reason) of an earlier paper this one probably duplicates."""
        if doi:
            hit = s.execute(
                select(Paper.doc_id).where(func.lower(Paper.doi) == doi.lower()).limit(1)
            ).scalar_one_or_none()
            if hit:
                return hit, "same_doi"
        norm = normalize_title(title)
        if norm and len(norm) >= 12:
            key = first_author_key(authors)
            for doc_id, other_authors in s.execute(
                select(Paper.doc_id, Paper.authors).where(Paper.norm_title == norm)
            ):
                if key is None or first_author_key(other_authors) in (None, key):
                    return doc_id, "same_title_first_author"
        return None

    # --- writes ------------------------------------------------------------------
    def add_paper(self, data: PaperInput) -> str:
        """Store a new paper with its pages and vectors; returns its doc_id."""
        return self.add_papers([data])[0]

    def add_papers(self, items: Sequence[PaperInput]) -> list[str]:
        """Store several new papers in ONE write transaction; returns their doc_ids.

        Why: a bulk import then pays the barrier, the transaction and above all the
        ChromaDB upsert (a fixed ~10 ms a call) once per group instead of once per
        paper. SQLite is all or nothing for the group (a failure stores none of it,
        so a caller can retry the papers one by one); duplicate detection sees the
        papers earlier in the same group. Callers keep groups small (a few dozen
        pages) so the write path stays short (DESIGN.md §2).
        """
        if not items:
            return []
        written: list[tuple[Paper, list[Vector]]] = []
        with self.db.barrier():
            with self.db.write() as s:
                gen = s.info["generation"]
                for data in items:
                    written.append(self._insert_paper(s, data, gen))
            # ChromaDB second, from the rows just committed (still under the barrier).
            self._upsert_vectors(written)
        return [paper.doc_id for paper, _ in written]

    def _insert_paper(self, s: Session, data: PaperInput, gen: int) -> tuple[Paper, list[Vector]]:
        meta = data.metadata
        # Flushes what the session holds first, so earlier papers of a group count.
        dup = self.find_duplicate(s, meta.get("doi"), meta.get("title"), meta.get("authors") or [])
        paper = Paper(
            doc_id=data.doc_id or str(uuid.uuid4()),
            filename=data.filename,
            file_sha256=data.file_sha256,
            file_size=data.file_size,
            page_count=data.page_count,
            title=meta.get("title"),
            norm_title=normalize_title(meta.get("title")),
            authors=list(meta.get("authors") or []),
            year=meta.get("year"),
            journal=meta.get("journal"),
            doi=meta.get("doi"),
            arxiv_id=meta.get("arxiv_id"),
            abstract=meta.get("abstract"),
            keywords=list(meta.get("keywords") or []),
            tags=list(meta.get("tags") or []),
            field_sources=dict(data.field_sources),
            ocr_quality=_mean([p.quality for p in data.pages]),
            ocr_pages=sum(1 for p in data.pages if p.source == "ocr"),
            processing_time=data.processing_time,
            duplicate_of=dup[0] if dup else None,
            duplicate_reason=dup[1] if dup else None,
            generation=gen,
        )
        s.add(paper)
        s.flush()
        rows: list[Vector] = []
        for p in data.pages:
            s.add(
                Page(
                    paper_id=paper.id,
                    page_number=p.number,
                    text=p.text,
                    text_source=p.source,
                    quality=p.quality,
                )
            )
            if p.vector is not None:
                rows.append(self._vector_row(paper, "page", p.number, p.vector, data, gen))
        if data.paper_vector is not None:
            rows.append(self._vector_row(paper, "paper", 0, data.paper_vector, data, gen))
        s.add_all(rows)
        s.flush()  # the pages, which index_body reads
        fts.index_paper(s, paper)
        fts.index_body(s, paper.id)
        return paper, rows

    def _vector_row(
        self, paper: Paper, kind: str, page: int, vec: np.ndarray, data: PaperInput, gen: int
    ) -> Vector:
        blob = encode_vector(vec, self.vector_storage)
        return Vector(
            paper_id=paper.id,
            kind=kind,
            page_number=page,
            chroma_id=page_vector_id(paper.doc_id, page) if kind == "page" else paper.doc_id,
            model=data.model,
            model_revision=data.model_revision,
            dimension=int(np.asarray(vec).shape[-1]),
            vector=blob,
            dtype=self.vector_storage,
            checksum=checksum(blob),
            generation=gen,
        )

    def sync_paper_vectors(self, doc_id: str) -> int:
        """Write a paper's vectors from SQLite into ChromaDB (idempotent)."""
        if self.vectors is None:
            return 0
        with self.db.barrier(), self.db.read() as s:
            paper = self.get(s, doc_id)
            if paper is None:
                return 0
            rows = s.execute(select(Vector).where(Vector.paper_id == paper.id)).scalars().all()
            self._upsert_vectors([(paper, list(rows))])
            return len(rows)

    def _upsert_vectors(self, written: Sequence[tuple[Paper, Sequence[Vector]]]) -> None:
        """One ChromaDB upsert per collection for these papers' SQLite vector rows."""
        if self.vectors is None:
            return
        for kind, name in (("page", PAGES), ("paper", PAPERS)):
            sel = [(paper, r) for paper, rows in written for r in rows if r.kind == kind]
            if not sel:
                continue
            upsert_rows(self.vectors, name, [(r, paper) for paper, r in sel])

    def delete_paper(self, doc_id: str, *, username: str | None = None) -> bool:
        """Remove a paper's rows, vectors and (if no other paper uses it) its file."""
        with self.db.barrier():
            with self.db.write() as s:
                paper = self.get(s, doc_id)
                if paper is None:
                    return False
                sha = paper.file_sha256
                fts.remove_paper(s, paper.id)
                s.delete(paper)
                s.flush()
                still_used = s.execute(
                    select(func.count()).select_from(Paper).where(Paper.file_sha256 == sha)
                ).scalar_one()
            if self.vectors is not None:
                self.vectors.delete_paper(doc_id)
            # Backups keep their own content-addressed copies (DESIGN.md §5).
            if not still_used:
                self.files.remove(sha)
        return True

    def update_metadata(
        self,
        doc_id: str,
        changes: dict[str, Any],
        *,
        source: str = "user",
        username: str | None = None,
    ) -> Paper | None:
        """Edit fields, recording each old value so the edit can be undone."""
        unknown = set(changes) - set(EDITABLE_FIELDS)
        if unknown:
            raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
        with self.db.barrier():
            with self.db.write() as s:
                paper = self.get(s, doc_id)
                if paper is None:
                    return None
                sources = dict(paper.field_sources or {})
                for name, value in changes.items():
                    old = getattr(paper, name)
                    if old == value:
                        continue
                    s.add(
                        FieldEdit(
                            paper_id=paper.id,
                            field=name,
                            old_value=old,
                            new_value=value,
                            old_source=sources.get(name),
                            new_source=source,
                            username=username,
                        )
                    )
                    setattr(paper, name, value)
                    sources[name] = source
                paper.field_sources = sources
                paper.norm_title = normalize_title(paper.title)
                paper.generation = s.info["generation"]
                fts.index_paper(s, paper)
            self._refresh_chroma_metadata(doc_id)
        return paper

    def undo_edit(self, edit_id: int, *, username: str | None = None) -> Paper | None:
        with self.db.barrier():
            with self.db.write() as s:
                edit = s.get(FieldEdit, edit_id)
                if edit is None:
                    return None
                paper = s.get(Paper, edit.paper_id)
                assert paper is not None
                setattr(paper, edit.field, edit.old_value)
                sources = dict(paper.field_sources or {})
                if edit.old_source:
                    sources[edit.field] = edit.old_source
                else:
                    sources.pop(edit.field, None)
                paper.field_sources = sources
                paper.norm_title = normalize_title(paper.title)
                paper.generation = s.info["generation"]
                s.execute(delete(FieldEdit).where(FieldEdit.id == edit_id))
                fts.index_paper(s, paper)
                doc_id = paper.doc_id
            self._refresh_chroma_metadata(doc_id)
        with self.db.read() as s:
            return self.get(s, doc_id)

    def _refresh_chroma_metadata(self, doc_id: str) -> None:
        self.sync_paper_vectors(doc_id)


def upsert_rows(vectors: VectorIndex, name: str, rows: Sequence[tuple[Vector, Paper]]) -> int:
    """Write SQLite vector rows (with their papers) into one ChromaDB collection.

    The one way SQLite's truth reaches the index: decoded by each row's dtype,
    with the metadata the consistency checker compares.
    """
    if not rows:
        return 0
    vectors.upsert(
        name,
        [v.chroma_id for v, _ in rows],
        decode_vectors(
            [v.vector for v, _ in rows], [v.dtype for v, _ in rows], rows[0][0].dimension
        ),
        [chroma_metadata(p, v) for v, p in rows],
    )
    return len(rows)


def chroma_metadata(paper: Paper, row: Vector) -> dict[str, Any]:
    return {
        "doc_id": paper.doc_id,
        "paper_id": paper.id,
        "page": row.page_number,
        "kind": row.kind,
        "title": (paper.title or "")[:500],
        "year": paper.year if paper.year is not None else -1,
        "generation": row.generation,
        "checksum": row.checksum,
        "model": row.model,
        "dimension": row.dimension,
    }


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0
