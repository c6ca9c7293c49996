"""The ingest pipeline: small steps, each recorded on the job.

validate → store_file → extract_text → metadata → embeddings → save → preview.
Nothing reaches the library before ``save``, which writes paper, pages, vectors
and the full-text index in one transaction; every step before it can simply be
run again, so a job interrupted by a crash resumes by running again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pymupdf

from refserver.config import Settings
from refserver.embedding.model import Embedder, mean_vector
from refserver.ingest.extract import PageText, chunk_words, extract_pages
from refserver.ingest.metadata import ExtractedMetadata, extract_metadata
from refserver.ingest.preview import render_preview
from refserver.ingest.validate import PdfRejected, validate_pdf
from refserver.jobs.store import JobCancelled, JobStore
from refserver.storage.files import sha256_file
from refserver.storage.library import Library, PageInput, PaperInput

log = logging.getLogger(__name__)

STEPS = ("validate", "store_file", "extract_text", "metadata", "embeddings", "save", "preview")
PROGRESS = {
    "validate": 5.0,
    "store_file": 10.0,
    "extract_text": 45.0,
    "metadata": 50.0,
    "embeddings": 85.0,
    "save": 92.0,
    "preview": 98.0,
}


class IngestPipeline:
    def __init__(
        self,
        settings: Settings,
        library: Library,
        jobs: JobStore,
        embedder_factory: Any,
    ) -> None:
        self.settings = settings
        self.library = library
        self.jobs = jobs
        self._embedder_factory = embedder_factory
        self.timings: dict[str, float] = {}

    @property
    def embedder(self) -> Embedder:
        return self._embedder_factory()

    # --- entry points ----------------------------------------------------------
    def run_job(self, job_id: str) -> None:
        """Run (or resume) an ingest job; records success or failure on it."""
        job = self.jobs.start(job_id)
        if job is None:
            return
        started = time.monotonic()
        step = "validate"
        try:
            result = self._run(
                job_id, job.staged_path, job.file_sha256, job.filename, job.params or {}
            )
            step = "done"
            result["processing_time"] = round(time.monotonic() - started, 3)
            self.jobs.finish(job_id, "completed", summary=result, paper_id=result["doc_id"])
            self._cleanup_staged(job.staged_path)
        except JobCancelled:
            self.jobs.finish(job_id, "cancelled", error="cancelled by request")
            self._cleanup_staged(job.staged_path)
        except PdfRejected as exc:
            self.jobs.step_failed(job_id, exc.step if hasattr(exc, "step") else step, exc.reason)
            self.jobs.finish(job_id, "failed", error=exc.reason)
            self._cleanup_staged(job.staged_path)
        except _StepError as exc:
            self.jobs.step_failed(job_id, exc.step, exc.message)
            self.jobs.finish(job_id, "failed", error=f"{exc.step}: {exc.message}")

    def _cleanup_staged(self, staged: str | None) -> None:
        if staged:
            Path(staged).unlink(missing_ok=True)

    def _check_cancel(self, job_id: str) -> None:
        if self.jobs.is_cancel_requested(job_id):
            raise JobCancelled()

    def _step(self, job_id: str, name: str) -> _Step:
        return _Step(self, job_id, name)

    # --- the steps ---------------------------------------------------------------
    def _run(
        self,
        job_id: str,
        staged: str | None,
        sha: str | None,
        filename: str,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        s = self.settings
        t0 = time.monotonic()
        source = Path(staged) if staged and Path(staged).exists() else None
        if source is None and sha and self.library.files.exists(sha):
            source = self.library.files.path_for(sha)  # resumed after the staged copy went
        if source is None:
            raise _StepError("validate", "the uploaded file is gone; upload it again")

        with self._step(job_id, "validate"):
            page_count = validate_pdf(
                source, max_bytes=s.max_upload_mb * 1024 * 1024, max_pages=s.max_pages
            )

        with self._step(job_id, "store_file") as st:
            sha = sha or sha256_file(source)
            existing = self.library.find_by_sha(sha)
            if existing:
                st.result = {"duplicate_file": True, "doc_id": existing}
                self.jobs.update(job_id, file_sha256=sha, paper_id=existing)
                self.library.sync_paper_vectors(existing)
                return {
                    "doc_id": existing,
                    "duplicate_file": True,
                    "message": "identical file already stored",
                }
            self.library.files.put(source, sha)
            self.jobs.update(job_id, file_sha256=sha)
            st.result = {"sha256": sha, "size": source.stat().st_size}
        stored = self.library.files.path_for(sha)

        doc = pymupdf.open(stored)
        try:
            with self._step(job_id, "extract_text") as st:

                def progress(done: int, total: int) -> None:
                    pct = 10.0 + 35.0 * done / max(total, 1)
                    if done % 5 == 0 or done == total:
                        self.jobs.update(job_id, progress=round(pct, 1))

                pages = extract_pages(
                    doc,
                    ocr=bool(params.get("ocr", s.ocr_enabled)),
                    ocr_languages=s.ocr_languages,
                    ocr_dpi=s.ocr_dpi,
                    quality_threshold=s.text_quality_threshold,
                    should_cancel=lambda: self.jobs.is_cancel_requested(job_id),
                    progress=progress,
                )
                self._check_cancel(job_id)
                ocr_pages = sum(1 for p in pages if p.source == "ocr")
                st.result = {"pages": len(pages), "ocr_pages": ocr_pages}

            with self._step(job_id, "metadata") as st:
                meta = extract_metadata(doc, pages)
                meta = self._refine(meta, pages)
                meta = _apply_overrides(meta, params.get("metadata") or {})
                st.result = {"title": meta.title, "doi": meta.doi, "year": meta.year}

            with self._step(job_id, "embeddings") as st:
                page_vecs, paper_vec = self.embed_pages(pages, meta)
                self._check_cancel(job_id)
                st.result = {
                    "vectors": sum(v is not None for v in page_vecs) + 1,
                    "dimension": self.embedder.dimension,
                }

            with self._step(job_id, "save") as st:
                data = PaperInput(
                    file_sha256=sha,
                    file_size=stored.stat().st_size,
                    filename=filename,
                    page_count=page_count,
                    pages=[
                        PageInput(p.number, p.text, p.source, p.quality, v)
                        for p, v in zip(pages, page_vecs, strict=True)
                    ],
                    metadata={**_meta_dict(meta), **_tags(params)},
                    field_sources={**meta.sources, **_tag_source(params)},
                    paper_vector=paper_vec,
                    model=self.embedder.name,
                    model_revision=self.embedder.revision,
                    processing_time=round(time.monotonic() - t0, 3),
                )
                doc_id = self.library.add_paper(data)
                self.jobs.update(job_id, paper_id=doc_id)
                st.result = {"doc_id": doc_id}

            with self._step(job_id, "preview"):
                self.render_preview(doc, doc_id)
        finally:
            doc.close()
        with self.library.db.read() as rs:
            paper = self.library.get(rs, doc_id)
            dup = paper.duplicate_of if paper else None
        return {
            "doc_id": doc_id,
            "title": meta.title,
            "pages": len(pages),
            "ocr_pages": ocr_pages,
            "duplicate_of": dup,
            "message": "processed" if not dup else f"stored; probable duplicate of {dup}",
        }

    def _refine(self, meta: ExtractedMetadata, pages: list[PageText]) -> ExtractedMetadata:
        if not self.settings.llm_enabled:
            return meta
        from refserver.ingest.llm import refine_with_llm

        return refine_with_llm(
            meta,
            pages[0].text if pages else "",
            base_url=self.settings.llm_base_url,
            model=self.settings.llm_model,
            api_key=self.settings.llm_api_key,
            timeout=self.settings.llm_timeout,
        )

    def embed_pages(
        self, pages: list[PageText], meta: ExtractedMetadata | None = None
    ) -> tuple[list[np.ndarray | None], np.ndarray | None]:
        """A vector per page (mean of its ~150-word chunks) and one for the paper."""
        chunks: list[str] = []
        owner: list[int] = []
        for i, p in enumerate(pages):
            for c in chunk_words(p.text, size=self.settings.chunk_words):
                chunks.append(c)
                owner.append(i)
        head = " ".join(
            x for x in ((meta.title if meta else None), (meta.abstract if meta else None)) if x
        )
        if head:
            chunks.append(head)
            owner.append(-1)
        if not chunks:
            return [None] * len(pages), None
        vecs = self.embedder.embed(chunks)
        owners = np.array(owner)
        page_vecs: list[np.ndarray | None] = []
        for i in range(len(pages)):
            sel = vecs[owners == i]
            page_vecs.append(mean_vector(sel) if len(sel) else None)
        present = [v for v in page_vecs if v is not None]
        parts = list(present)
        if head:
            parts.append(vecs[owners == -1][0])
        paper_vec = mean_vector(np.vstack(parts)) if parts else None
        return page_vecs, paper_vec

    def render_preview(self, doc: pymupdf.Document, doc_id: str) -> Path:
        out = self.settings.previews_dir / f"{doc_id}.png"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp.png")
            render_preview(doc, tmp)
            tmp.replace(out)
        return out


class _StepError(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class _Step:
    """Records a step's start, result, duration or failure on the job."""

    def __init__(self, pipeline: IngestPipeline, job_id: str, name: str) -> None:
        self.p = pipeline
        self.job_id = job_id
        self.name = name
        self.result: dict[str, Any] | None = None

    def __enter__(self) -> _Step:
        self.p._check_cancel(self.job_id)
        prev = STEPS[STEPS.index(self.name) - 1] if STEPS.index(self.name) else None
        self.p.jobs.step_started(self.job_id, self.name, PROGRESS.get(prev, 0.0) if prev else 0.0)
        self._t = time.monotonic()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        elapsed = time.monotonic() - self._t
        self.p.timings[self.name] = self.p.timings.get(self.name, 0.0) + elapsed
        if exc is None:
            result = {**(self.result or {}), "seconds": round(elapsed, 3)}
            self.p.jobs.step_done(self.job_id, self.name, PROGRESS[self.name], result)
            return False
        if isinstance(exc, JobCancelled | _StepError):
            return False
        if isinstance(exc, PdfRejected):
            exc.step = self.name  # type: ignore[attr-defined]
            return False
        log.exception("ingest step %s failed for job %s", self.name, self.job_id)
        raise _StepError(self.name, f"{type(exc).__name__}: {exc}") from exc


def _meta_dict(meta: ExtractedMetadata) -> dict[str, Any]:
    d = asdict(meta)
    d.pop("sources", None)
    return d


def _tags(params: dict[str, Any]) -> dict[str, Any]:
    """Tags given with the upload (e.g. Zotero collections): not extracted, so kept aside."""
    tags = (params.get("metadata") or {}).get("tags")
    return {"tags": [str(t) for t in tags]} if isinstance(tags, list) and tags else {}


def _tag_source(params: dict[str, Any]) -> dict[str, str]:
    if not _tags(params):
        return {}
    return {"tags": str((params.get("metadata") or {}).get("_source", "user"))}


def _apply_overrides(meta: ExtractedMetadata, overrides: dict[str, Any]) -> ExtractedMetadata:
    """Metadata given with the upload (e.g. from Zotero) wins, with its source kept."""
    source = overrides.get("_source", "user")
    for k, v in overrides.items():
        if k.startswith("_") or v in (None, "", []):
            continue
        if hasattr(meta, k):
            setattr(meta, k, v)
            meta.sources[k] = source
    return meta
