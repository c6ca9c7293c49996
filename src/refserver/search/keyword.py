"""Keyword search: SQLite FTS5 with BM25 ranking, highlighted snippets and filters.

User text never reaches FTS5 as syntax: every word becomes a quoted token
(``"word"``; ``word*`` stays a prefix search, ``"two words"`` and words joined
by punctuation such as ``state-of-the-art`` a phrase), all of them required, so
input like ``"`` or ``AND(`` cannot make a malformed MATCH expression.
A term may be found in the paper's metadata or in its text; the score adds the
metadata's weighted BM25 and the text's, and the snippet comes from whichever
of the two shows more of the terms (``storage.fts``).
Rows are ordered by score then paper id, and ``snapshot`` (the newest paper id
when paging started) hides papers added later, so pages do not shift or repeat
while the library grows.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from refserver.search.common import (
    MARK_CLOSE,
    MARK_OPEN,
    Filters,
    Result,
    SearchPage,
    current_snapshot,
    marks_to_html,
    result_from_paper,
)
from refserver.storage import fts
from refserver.storage.models import Paper


def fts_query(q: str | None) -> str | None:
    """A safe FTS5 MATCH expression for free user text (AND of quoted terms)."""
    return " ".join(fts.match_terms(q)) or None


def keyword_search(
    s: Session,
    q: str | None,
    filters: Filters,
    limit: int,
    offset: int,
    *,
    snapshot: int | None = None,
    generation: int = 0,
) -> SearchPage:
    """BM25-ranked papers matching ``q`` (or every paper, newest first, without ``q``)."""
    snap = current_snapshot(s) if snapshot is None else snapshot
    conds, params = filters.sql("p")
    conds.append("p.id <= :snapshot")
    params["snapshot"] = snap
    terms = fts.match_terms(q)
    if q and q.strip() and not terms:  # only punctuation: nothing can match
        return SearchPage(0, [], "keyword", snap, generation)
    if not terms:
        return _list_newest(s, conds, params, limit, offset, snap, generation)
    hits_sql, hit_params = fts.matches(terms)
    params.update(hit_params, limit=limit, offset=offset)
    where = " AND ".join(conds)
    base = f"FROM ({hits_sql}) AS m JOIN papers p ON p.id = m.pid WHERE {where}"
    total = s.execute(text(f"SELECT count(*) {base}"), params).scalar_one()
    rows = s.execute(
        text(f"SELECT p.id, m.rank {base} ORDER BY m.rank, p.id LIMIT :limit OFFSET :offset"),
        params,
    ).all()
    papers = _papers(s, [r[0] for r in rows])
    snips = fts.snippets(s, terms, [pid for pid, _ in rows])
    results = [
        result_from_paper(papers[pid], -float(rank), marks_to_html(snips.get(pid, "")))
        for pid, rank in rows
        if pid in papers
    ]
    return SearchPage(int(total), results, "keyword", snap, generation)


def _list_newest(
    s: Session,
    conds: list[str],
    params: dict,
    limit: int,
    offset: int,
    snap: int,
    generation: int,
) -> SearchPage:
    where = " AND ".join(conds)
    total = s.execute(text(f"SELECT count(*) FROM papers p WHERE {where}"), params).scalar_one()
    ids = [
        r[0]
        for r in s.execute(
            text(
                f"SELECT p.id FROM papers p WHERE {where} "
                "ORDER BY p.created_at DESC, p.id DESC LIMIT :limit OFFSET :offset"
            ),
            {**params, "limit": limit, "offset": offset},
        )
    ]
    papers = _papers(s, ids)
    results: list[Result] = []
    for pid in ids:
        p = papers.get(pid)
        if p is not None:
            head = " ".join((p.abstract or "").split()[:40])
            results.append(result_from_paper(p, 0.0, marks_to_html(head)))
    return SearchPage(int(total), results, "list", snap, generation)


def _papers(s: Session, ids: list[int]) -> dict[int, Paper]:
    if not ids:
        return {}
    from sqlalchemy import select

    return {p.id: p for p in s.execute(select(Paper).where(Paper.id.in_(ids))).scalars()}


__all__ = ["MARK_CLOSE", "MARK_OPEN", "fts_query", "keyword_search"]
