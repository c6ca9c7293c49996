"""Choosing papers for a citation export: one paper, a keyword search, or everything."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text

from refserver.interop.common import FORMATS, export_records, records_from_papers
from refserver.storage import fts
from refserver.storage.models import Paper

if TYPE_CHECKING:
    from refserver.context import AppContext


def select_papers(
    ctx: AppContext, *, q: str | None = None, doc_ids: list[str] | None = None
) -> list[Paper]:
    """Papers for export, best match first for a query, oldest first otherwise."""
    with ctx.db.read() as s:
        if doc_ids:
            rows = s.execute(select(Paper).where(Paper.doc_id.in_(doc_ids))).scalars().all()
            order = {d: i for i, d in enumerate(doc_ids)}
            return sorted(rows, key=lambda p: order.get(p.doc_id, 0))
        if q and q.strip():
            terms = fts.match_terms(q)
            if not terms:
                return []
            hits_sql, params = fts.matches(terms)
            ids = [r[0] for r in s.execute(text(f"{hits_sql} ORDER BY rank, pid"), params)]
            if not ids:
                return []
            rows = s.execute(select(Paper).where(Paper.id.in_(ids))).scalars().all()
            pos = {pid: i for i, pid in enumerate(ids)}
            return sorted(rows, key=lambda p: pos[p.id])
        return list(s.execute(select(Paper).order_by(Paper.created_at, Paper.id)).scalars())


def export_library(
    ctx: AppContext, fmt: str, *, q: str | None = None, doc_ids: list[str] | None = None
) -> tuple[str, int]:
    """(text, number of records) in ``fmt`` for the selected papers."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of: {', '.join(FORMATS)}")
    papers = select_papers(ctx, q=q, doc_ids=doc_ids)
    return export_records(records_from_papers(papers), fmt), len(papers)


def content_type(fmt: str) -> str:
    return FORMATS[fmt][0]


def filename_for(fmt: str, stem: str = "refserver-export") -> str:
    return f"{stem}.{FORMATS[fmt][1]}"


def describe(fmt: str) -> dict[str, Any]:
    return {"format": fmt, "content_type": content_type(fmt), "extension": FORMATS[fmt][1]}
