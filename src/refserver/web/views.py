"""View models for the admin pages: plain dicts built from the domain code, in-process.

Routes stay thin: they parse the request, call one of these and render a template.
Areas that may be missing from a build (search, backups, checks, recovery) are
imported lazily; their pages then say "not available in this build".
"""

from __future__ import annotations

import html
import importlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from markupsafe import Markup
from sqlalchemy import Float, Integer, String, func, select, text
from sqlalchemy.orm import Session

from refserver.api.routes.system import library_stats
from refserver.api.schemas import job_public
from refserver.storage import fts
from refserver.storage.library import EDITABLE_FIELDS
from refserver.storage.models import BackupRecord, CheckRun, FieldEdit, Page, Paper

SORTS = ("relevance", "added", "title", "year")
PER_PAGE = 25
# With a query, results are fetched up to this many and re-sorted when the user
# asks for a sort other than relevance (a search ranks; a list sorts).
MAX_SORTED_HITS = 500
LIST_FIELDS = ("authors", "keywords", "tags")


def optional_module(name: str) -> Any | None:
    """A module of an area that may not be part of this build, or None."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            return None
        raise


# --- dashboard ---------------------------------------------------------------------


def _dir_size(path: Path) -> int:
    total = 0
    if not path.exists():
        return 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                continue
    return total


STORAGE_TTL_S = 30.0


def storage_usage(ctx: Any) -> dict[str, int]:
    """Bytes used per store, cached briefly: walking the backup folder is not free."""
    cached = ctx.extras.get("web.storage_usage")
    if cached is not None and time.monotonic() - cached[0] < STORAGE_TTL_S:
        return dict(cached[1])
    value = _storage_usage(ctx)
    ctx.extras["web.storage_usage"] = (time.monotonic(), value)
    return dict(value)


def _storage_usage(ctx: Any) -> dict[str, int]:
    """Bytes used per store (PDFs from SQLite; the database and Chroma from disk)."""
    data = ctx.settings.data_dir
    db_bytes = 0
    if ctx.db.is_sqlite:
        db_file = Path(str(ctx.db.engine.url.database or ""))
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(db_file) + suffix)
            if p.exists():
                db_bytes += p.stat().st_size
    chroma = _dir_size(ctx.settings.chroma_path) if not ctx.settings.chroma_host else 0
    backups = _dir_size(ctx.settings.backups_dir)
    with ctx.db.read() as s:
        pdf = int(s.execute(select(func.coalesce(func.sum(Paper.file_size), 0))).scalar_one())
    disk = shutil.disk_usage(data)
    return {
        "pdf_bytes": pdf,
        "database_bytes": db_bytes,
        "chroma_bytes": chroma,
        "backup_bytes": backups,
        "used_bytes": pdf + db_bytes + chroma,
        "free_bytes": disk.free,
        "disk_bytes": disk.total,
    }


def service_status(ctx: Any) -> list[dict[str, Any]]:
    """One row per service: name, ok (True/False/None = switched off), detail."""
    from refserver.ingest.ocr import tesseract_available

    try:
        db = {"ok": True, "detail": f"generation {ctx.db.generation()}"}
    except Exception as exc:  # the page must render even when the database is sick
        db = {"ok": False, "detail": str(exc)}
    ocr = tesseract_available()
    running = bool(ctx.scheduler is not None and getattr(ctx.scheduler, "running", False))
    sched_mod = optional_module("refserver.safety.scheduler")
    reason = (
        sched_mod.scheduler_state(ctx).get("reason", "")
        if sched_mod is not None
        else ("running" if running else "off")
    )
    return [
        {"name": "Database", **db},
        {
            "name": "Vector index",
            "ok": ctx.vectors is not None,
            "detail": "Chroma server" if ctx.settings.chroma_host else "embedded ChromaDB",
        },
        {
            "name": "Workers",
            "ok": bool(ctx.queue.running),
            "detail": f"{ctx.queue.workers} × {ctx.settings.queue_backend}",
        },
        {
            "name": "Writes",
            "ok": not ctx.db.writes_paused,
            "detail": "paused (restore in progress)" if ctx.db.writes_paused else "accepted",
        },
        {"name": "OCR", "ok": ocr, "detail": "tesseract" if ocr else "tesseract missing"},
        {
            "name": "Scheduler",
            "ok": True if running else (None if not ctx.settings.scheduler_enabled else False),
            "detail": reason,
        },
    ]


def latest_backup(ctx: Any) -> dict[str, Any] | None:
    """The newest backup record, read straight from SQLite (works without the module)."""
    with ctx.db.read() as s:
        rec = s.execute(
            select(BackupRecord).order_by(BackupRecord.created_at.desc()).limit(1)
        ).scalar_one_or_none()
        if rec is None:
            return None
        return {
            "backup_id": rec.backup_id,
            "type": rec.type,
            "status": rec.status,
            "size_bytes": rec.size_bytes,
            "verified": rec.verified,
            "created_at": rec.created_at,
        }


def papers_per_day(ctx: Any, days: int = 14) -> list[tuple[str, float]]:
    """Papers added per day over the last ``days`` days (oldest first), for a bar chart."""
    since = datetime.now(UTC) - timedelta(days=days - 1)
    since = since.replace(hour=0, minute=0, second=0, microsecond=0)
    counts: dict[str, int] = {}
    with ctx.db.read() as s:
        for (created,) in s.execute(select(Paper.created_at).where(Paper.created_at >= since)):
            if created is None:
                continue
            counts[created.strftime("%m-%d")] = counts.get(created.strftime("%m-%d"), 0) + 1
    out = []
    for i in range(days):
        label = (since + timedelta(days=i)).strftime("%m-%d")
        out.append((label, float(counts.get(label, 0))))
    return out


def dashboard(ctx: Any) -> dict[str, Any]:
    stats = library_stats(ctx)
    jobs = stats["jobs"]
    recent_jobs, _ = ctx.jobs.list(limit=6)
    with ctx.db.read() as s:
        recent = [
            _paper_row(p)
            for p in s.execute(
                select(Paper).order_by(Paper.created_at.desc(), Paper.id.desc()).limit(6)
            ).scalars()
        ]
    return {
        "stats": stats,
        "in_flight": jobs.get("queued", 0) + jobs.get("processing", 0),
        "storage": storage_usage(ctx),
        "services": service_status(ctx),
        "last_backup": latest_backup(ctx),
        "readiness": readiness_brief(ctx),
        "recent_papers": recent,
        "recent_jobs": [job_public(j) for j in recent_jobs],
        "added_chart": bar_chart(
            papers_per_day(ctx), title="Papers added per day (last 14 days)", unit=""
        ),
    }


# --- papers list -------------------------------------------------------------------


@dataclass
class PaperQuery:
    """What the papers list was asked for (all from the query string)."""

    q: str = ""
    year: int | None = None
    author: str = ""
    sort: str = "added"
    order: str = "desc"
    page: int = 1
    per_page: int = PER_PAGE
    explicit_sort: bool = False

    @classmethod
    def parse(cls, params: dict[str, str]) -> PaperQuery:
        q = (params.get("q") or "").strip()[:500]
        year_raw = (params.get("year") or "").strip()
        year = int(year_raw) if year_raw.isdigit() else None
        # No sort chosen (or one that needs a query): best match for a search, newest
        # first for a plain list; so a new query typed on the list ranks by relevance.
        sort = params.get("sort") or ""
        explicit = sort in SORTS and (sort != "relevance" or bool(q))
        if not explicit:
            sort = "relevance" if q else "added"
        default_order = "asc" if sort == "title" else "desc"
        order = params.get("order") or default_order
        if order not in ("asc", "desc"):
            order = default_order
        page_raw = params.get("page") or "1"
        page = max(1, int(page_raw)) if page_raw.isdigit() else 1
        author = (params.get("author") or "").strip()[:200]
        return cls(
            q=q,
            year=year,
            author=author,
            sort=sort,
            order=order,
            page=page,
            explicit_sort=explicit and sort != "relevance",
        )

    def link(self, **changes: Any) -> str:
        """The list URL with some parameters changed (sort headers, pager)."""
        from urllib.parse import urlencode

        values = {
            "q": self.q,
            "year": self.year or "",
            "author": self.author,
            "sort": self.sort if self.explicit_sort else "",
            "order": self.order if self.explicit_sort else "",
            "page": self.page,
        }
        values.update(changes)
        return "/admin/papers?" + urlencode(
            {k: v for k, v in values.items() if v not in ("", None)}
        )

    def sort_link(self, column: str) -> str:
        if self.sort == column:
            order = "asc" if self.order == "desc" else "desc"
        else:
            order = "asc" if column == "title" else "desc"
        return self.link(sort=column, order=order, page=1)

    def aria_sort(self, column: str) -> str:
        if self.sort != column:
            return "none"
        return "ascending" if self.order == "asc" else "descending"


@dataclass
class PaperList:
    rows: list[dict[str, Any]]
    total: int
    mode: str
    pages: int
    years: list[int] = field(default_factory=list)
    notice: str | None = None


def safe_snippet(snippet: str | None) -> Markup:
    """Re-escape a search snippet, keeping only its <mark> tags (defence in depth)."""
    if not snippet:
        return Markup("")
    parts = re.split(r"(</?mark>)", snippet)
    out = []
    for part in parts:
        if part in ("<mark>", "</mark>"):
            out.append(part)
        else:
            out.append(html.escape(html.unescape(part), quote=False))
    return Markup("".join(out))


def _paper_row(p: Paper, **extra: Any) -> dict[str, Any]:
    return {
        "doc_id": p.doc_id,
        "title": p.title,
        "filename": p.filename,
        "authors": list(p.authors or []),
        "year": p.year,
        "journal": p.journal,
        "page_count": p.page_count,
        "created_at": p.created_at,
        "duplicate_of": p.duplicate_of,
        "ocr_pages": p.ocr_pages,
        **extra,
    }


def _like(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _author_condition(ctx: Any, author: str) -> Any:
    if ctx.db.is_sqlite:
        return text(
            "EXISTS (SELECT 1 FROM json_each(papers.authors) "
            "WHERE json_each.value LIKE :f_author ESCAPE '\\')"
        ).bindparams(f_author=_like(author))
    return func.cast(Paper.authors, String).like(_like(author), escape="\\")


def _order_by(sort: str, order: str) -> list[Any]:
    col = {
        "title": func.lower(func.coalesce(Paper.title, Paper.filename)),
        "year": Paper.year,
        "added": Paper.created_at,
    }.get(sort, Paper.created_at)
    primary = col.asc() if order == "asc" else col.desc()
    if sort == "year":
        primary = primary.nulls_last()
    return [primary, Paper.id.desc()]


def _years(s: Session) -> list[int]:
    return [
        int(y)
        for (y,) in s.execute(
            select(Paper.year).where(Paper.year.is_not(None)).distinct().order_by(Paper.year.desc())
        )
    ]


def list_papers(ctx: Any, pq: PaperQuery) -> PaperList:
    """Papers for the list page: a search when there is a query, else a sorted listing."""
    if pq.q:
        found = _search_with_service(ctx, pq)
        if found is not None:
            return found
    with ctx.db.read() as s:
        stmt = select(Paper)
        mode = "list"
        rank = None
        if pq.q:
            mode = "keyword"
            terms = fts.match_terms(pq.q) if ctx.db.is_sqlite else []
            if terms:
                hits_sql, hit_params = fts.matches(terms)
                hits = (
                    text(hits_sql)
                    .bindparams(**hit_params)
                    .columns(pid=Integer, rank=Float)
                    .subquery()
                )
                stmt = stmt.join(hits, hits.c.pid == Paper.id)
                rank = hits.c.rank
            else:
                stmt = stmt.where(Paper.title.like(_like(pq.q), escape="\\"))
        if pq.year is not None:
            stmt = stmt.where(Paper.year == pq.year)
        if pq.author:
            stmt = stmt.where(_author_condition(ctx, pq.author))
        total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
        order = (
            [rank.asc(), Paper.id.desc()]
            if pq.sort == "relevance" and rank is not None
            else _order_by(pq.sort, pq.order)
        )
        rows = s.execute(
            stmt.order_by(*order).limit(pq.per_page).offset((pq.page - 1) * pq.per_page)
        ).scalars()
        out = [_paper_row(p) for p in rows]
        years = _years(s)
    return PaperList(
        rows=out, total=total, mode=mode, pages=max(1, -(-total // pq.per_page)), years=years
    )


def _search_with_service(ctx: Any, pq: PaperQuery) -> PaperList | None:
    """Hybrid search through ``refserver.search`` when this build has it."""
    search = optional_module("refserver.search")
    if search is None:
        return None
    filters = search.Filters(author=pq.author or None, year=pq.year)
    svc = search.service(ctx)
    notice = None
    by_rank = pq.sort == "relevance"
    limit = pq.per_page if by_rank else MAX_SORTED_HITS
    offset = (pq.page - 1) * pq.per_page if by_rank else 0
    mode = "hybrid" if ctx.vectors is not None else "keyword"
    try:
        page = svc.search(pq.q, mode=mode, filters=filters, limit=limit, offset=offset)
    except Exception:
        if mode == "keyword":
            raise
        mode = "keyword"
        notice = "Semantic search is unavailable right now; showing keyword matches."
        page = svc.search(pq.q, mode=mode, filters=filters, limit=limit, offset=offset)
    results = page["results"]
    with ctx.db.read() as s:
        papers = {
            p.doc_id: p
            for p in s.execute(
                select(Paper).where(Paper.doc_id.in_([r["doc_id"] for r in results]))
            ).scalars()
        }
        years = _years(s)
    rows = [
        _paper_row(
            papers[r["doc_id"]], score=r.get("score"), snippet=safe_snippet(r.get("snippet"))
        )
        for r in results
        if r["doc_id"] in papers
    ]
    total = int(page["total"])
    if not by_rank:
        rows = _sort_rows(rows, pq.sort, pq.order)
        total = len(rows)
        start = (pq.page - 1) * pq.per_page
        rows = rows[start : start + pq.per_page]
    return PaperList(
        rows=rows,
        total=total,
        mode=str(page.get("mode", mode)),
        pages=max(1, -(-total // pq.per_page)),
        years=years,
        notice=notice,
    )


def _sort_rows(rows: list[dict[str, Any]], sort: str, order: str) -> list[dict[str, Any]]:
    reverse = order == "desc"
    if sort == "title":
        return sorted(
            rows, key=lambda r: (r["title"] or r["filename"] or "").lower(), reverse=reverse
        )
    if sort == "year":
        known = sorted(
            (r for r in rows if r["year"] is not None), key=lambda r: r["year"], reverse=reverse
        )
        return known + [r for r in rows if r["year"] is None]
    return sorted(rows, key=lambda r: r["created_at"], reverse=reverse)


# --- paper detail ------------------------------------------------------------------


def field_value(paper: Paper, name: str) -> str:
    """A field as the edit form shows it (lists one item per line)."""
    value = getattr(paper, name)
    if value is None:
        return ""
    if name in LIST_FIELDS:
        return "\n".join(str(v) for v in value)
    return str(value)


def paper_detail(ctx: Any, doc_id: str) -> dict[str, Any] | None:
    with ctx.db.read() as s:
        p = ctx.library.get(s, doc_id)
        if p is None:
            return None
        pages = [
            {
                "page": pg.page_number,
                "source": pg.text_source,
                "quality": pg.quality,
                "chars": len(pg.text or ""),
            }
            for pg in s.execute(
                select(Page).where(Page.paper_id == p.id).order_by(Page.page_number)
            ).scalars()
        ]
        edits = [
            {
                "id": e.id,
                "field": e.field,
                "old_value": e.old_value,
                "new_value": e.new_value,
                "old_source": e.old_source,
                "new_source": e.new_source,
                "username": e.username,
                "created_at": e.created_at,
            }
            for e in s.execute(
                select(FieldEdit).where(FieldEdit.paper_id == p.id).order_by(FieldEdit.id.desc())
            ).scalars()
        ]
        duplicate_of = None
        if p.duplicate_of:
            other = ctx.library.get(s, p.duplicate_of)
            duplicate_of = {
                "doc_id": p.duplicate_of,
                "title": other.title if other else None,
                "exists": other is not None,
                "reason": p.duplicate_reason,
            }
        duplicates = [
            {"doc_id": d.doc_id, "title": d.title, "reason": d.duplicate_reason}
            for d in s.execute(select(Paper).where(Paper.duplicate_of == p.doc_id)).scalars()
        ]
        sources = dict(p.field_sources or {})
        fields = [
            {
                "name": name,
                "label": name.replace("_", " ").capitalize() if name != "doi" else "DOI",
                "value": field_value(p, name),
                "source": sources.get(name),
                "multiline": name in LIST_FIELDS or name == "abstract",
            }
            for name in EDITABLE_FIELDS
        ]
        info = _paper_row(p)
        info.update(
            {
                "file_sha256": p.file_sha256,
                "file_size": p.file_size,
                "doi": p.doi,
                "arxiv_id": p.arxiv_id,
                "ocr_quality": p.ocr_quality,
                "processing_time": p.processing_time,
                "generation": p.generation,
                "updated_at": p.updated_at,
            }
        )
    return {
        "paper": info,
        "fields": fields,
        "pages": pages,
        "edits": edits,
        "duplicate_of": duplicate_of,
        "duplicates": duplicates,
        "similar": similar_papers(ctx, doc_id),
    }


def similar_papers(ctx: Any, doc_id: str, limit: int = 5) -> dict[str, Any]:
    """``{available, items}``: nearest papers through ``refserver.search`` when present."""
    search = optional_module("refserver.search")
    if search is None or ctx.vectors is None:
        return {"available": False, "items": []}
    try:
        found = search.service(ctx).similar(doc_id, limit) or {}
    except Exception as exc:  # the detail page must render even if the index is sick
        return {"available": False, "items": [], "error": str(exc)}
    return {"available": True, "items": list(found.get("similar_papers") or [])}


def page_view(ctx: Any, doc_id: str, number: int) -> dict[str, Any] | None:
    """One page for the viewer: its text and OCR facts, plus prev/next numbers."""
    with ctx.db.read() as s:
        p = ctx.library.get(s, doc_id)
        if p is None:
            return None
        count = p.page_count
        number = min(max(1, number), max(1, count))
        pg = s.execute(
            select(Page).where(Page.paper_id == p.id, Page.page_number == number)
        ).scalar_one_or_none()
        return {
            "doc_id": doc_id,
            "title": p.title or p.filename,
            "number": number,
            "count": count,
            "prev": number - 1 if number > 1 else None,
            "next": number + 1 if number < count else None,
            "text": pg.text if pg else "",
            "source": pg.text_source if pg else None,
            "quality": pg.quality if pg else None,
        }


class FormError(ValueError):
    """A form value the user must correct; the message is shown as is."""


def parse_metadata_form(form: dict[str, str]) -> dict[str, Any]:
    """The metadata form's fields as ``update_metadata`` changes (only fields sent)."""
    changes: dict[str, Any] = {}
    for name in EDITABLE_FIELDS:
        if name not in form:
            continue
        raw = str(form[name]).replace("\r\n", "\n")
        if name in LIST_FIELDS:
            sep = "\n" if name == "authors" else r"[\n,;]"
            changes[name] = [x.strip() for x in re.split(sep, raw) if x.strip()]
        elif name == "year":
            raw = raw.strip()
            if not raw:
                changes[name] = None
            elif re.fullmatch(r"\d{1,4}", raw):
                changes[name] = int(raw)
            else:
                raise FormError("Year must be a number such as 2019, or empty.")
        else:
            changes[name] = raw.strip() or None
    return changes


def unchanged_removed(ctx: Any, doc_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Drop fields whose value did not change, so each save records only real edits."""
    with ctx.db.read() as s:
        p = ctx.library.get(s, doc_id)
        if p is None:
            return {}
        out = {}
        for k, v in changes.items():
            current = getattr(p, k)
            if k in LIST_FIELDS:
                current = list(current or [])
            if current != v:
                out[k] = v
        return out


# --- jobs --------------------------------------------------------------------------


def jobs_view(ctx: Any, status: str | None = None, limit: int = 100) -> dict[str, Any]:
    jobs, total = ctx.jobs.list(status=status or None, limit=limit)
    return {
        "jobs": [job_public(j) for j in jobs],
        "total": total,
        "counts": ctx.jobs.counts(),
        "status": status or "",
        "workers_running": bool(ctx.queue.running),
        "updated": time.time(),
    }


# --- charts (inline SVG, server-rendered: no script, works with the strict CSP) -----


def bar_chart(
    points: list[tuple[str, float]],
    *,
    title: str,
    unit: str = "bytes",
    line: list[float] | None = None,
    line_label: str = "",
    width: int = 640,
    height: int = 200,
) -> Markup:
    """An accessible SVG bar chart (optionally with a line series on the same scale)."""
    from refserver.web.templating import filesize

    def fmt(v: float) -> str:
        return filesize(v) if unit == "bytes" else f"{v:g}{unit}"

    esc = html.escape
    if not points:
        return Markup(f'<p class="muted">{esc(title)}: no data yet.</p>')
    pad_l, pad_b, pad_t, pad_r = 64, 28, 12, 8
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max([v for _, v in points] + (line or []) + [0.0])
    top = top if top > 0 else 1.0
    n = len(points)
    slot = plot_w / n
    bar_w = min(max(2.0, slot * 0.7), 56.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{esc(title)}</title>",
    ]
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + plot_h * (1 - frac)
        parts.append(
            f'<line class="grid" x1="{pad_l}" x2="{width - pad_r}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(fmt(top * frac))}</text>'
        )
    label_every = max(1, n // 8)
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = pad_l + i * slot + (slot - bar_w) / 2
        y = pad_t + plot_h - h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}">'
            f"<title>{esc(label)}: {esc(fmt(value))}</title></rect>"
        )
        if i % label_every == 0:
            parts.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle">{esc(label)}</text>'
            )
    if line:
        coords = " ".join(
            f"{pad_l + i * slot + slot / 2:.1f},{pad_t + plot_h - plot_h * v / top:.1f}"
            for i, v in enumerate(line)
        )
        parts.append(
            f'<polyline class="line" points="{coords}"><title>{esc(line_label)}</title></polyline>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


# --- backup, consistency, recovery (areas that may be absent) ------------------------


def readiness_brief(ctx: Any) -> dict[str, Any] | None:
    """Readiness for the dashboard, from the recovery area when this build has it."""
    status = recovery_view(ctx)
    return status["readiness"] if status["available"] else None


def scheduler_jobs(ctx: Any) -> dict[str, Any]:
    """Scheduled protection jobs with next run times (planned ones when not running)."""
    sched_mod = optional_module("refserver.safety.scheduler")
    handle = ctx.scheduler
    if sched_mod is None:
        return {"available": False, "running": False, "jobs": [], "reason": ""}
    state = sched_mod.scheduler_state(ctx)
    jobs = handle.jobs() if hasattr(handle, "jobs") else sched_mod.planned_jobs(ctx.settings)
    return {
        "available": True,
        "running": bool(state.get("scheduler_running")),
        "reason": state.get("reason", ""),
        "timezone": state.get("timezone", ""),
        "jobs": jobs,
        "recent_runs": sched_mod.recent_runs(ctx.db, 10),
    }


def backup_view(ctx: Any, limit: int = 50) -> dict[str, Any]:
    """Status, history, chart and schedule for the backup page."""
    service = optional_module("refserver.safety.service")
    backup = optional_module("refserver.safety.backup")
    if service is None or backup is None:
        return {"available": False}
    status = service.status_public(ctx)
    manifests = backup.engine_of(ctx).manifests()
    history = [service.record_public(m) for m in reversed(manifests)]
    return {
        "available": True,
        "status": status,
        "history": history[:limit],
        "total": len(history),
        "chart": backup_chart(history),
        "schedule": scheduler_jobs(ctx),
    }


def backup_chart(history: list[dict[str, Any]], last: int = 30) -> Markup:
    """Bars: each backup's stored size; line: bytes all listed backups use by then."""
    done = [b for b in reversed(history) if b.get("status") == "completed"][-last:]
    points: list[tuple[str, float]] = []
    running: list[float] = []
    total = 0.0
    for b in done:
        size = float(b.get("size_bytes") or 0)
        total += size
        created = str(b.get("created_at") or "")
        label = created[5:16].replace("T", " ") if len(created) >= 16 else b.get("backup_id", "")
        points.append((f"{label} {b.get('type', '')}".strip(), size))
        running.append(total)
    return bar_chart(
        points,
        title="Backup sizes (bars) and backup storage used (line) over time",
        line=running,
        line_label="Backup storage used",
    )


def consistency_view(ctx: Any) -> dict[str, Any]:
    """Summary, the last check's issues and the history for the consistency page."""
    consistency = optional_module("refserver.safety.consistency")
    if consistency is None:
        return {"available": False}
    last = consistency.last_check(ctx.db)
    last_result = dict(last.result or {}) if last is not None else None
    return {
        "available": True,
        "summary": consistency.summary(ctx),
        "last": last_result,
        "last_id": last.id if last is not None else None,
        "history": consistency.history(ctx.db, limit=20),
        "severities": ("critical", "high", "medium", "low"),
    }


def recovery_view(ctx: Any) -> dict[str, Any]:
    """Readiness (score, criteria, recommendations), drills and the schedule."""
    readiness = optional_module("refserver.safety.readiness")
    if readiness is None:
        return {"available": False, "readiness": None}
    return {
        "available": True,
        "readiness": readiness.assess(ctx),
        "drills": check_history(ctx, "drill"),
        "schedule": scheduler_jobs(ctx),
    }


def check_history(ctx: Any, kind: str, limit: int = 10) -> list[dict[str, Any]]:
    """Past check runs of ``kind`` straight from SQLite (check, fix, drill...)."""
    with ctx.db.read() as s:
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "status": r.status,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "total_issues": r.total_issues,
                "result": dict(r.result or {}),
            }
            for r in s.execute(
                select(CheckRun)
                .where(CheckRun.kind == kind)
                .order_by(CheckRun.started_at.desc(), CheckRun.id.desc())
                .limit(limit)
            ).scalars()
        ]
