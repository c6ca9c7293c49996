"""Keyword search: SQLite FTS5 with BM25 ranking, highlighted snippets and filters.

User text never reaches FTS5 as syntax: every word becomes a quoted token
(``"word"``; ``word*`` stays a prefix search, ``"two words"`` and words joined
by punctuation such as ``state-of-the-art`` a phrase), all of them required, so
input like ``"`` or ``AND(`` cannot make a malformed MATCH expression.
Rows are ordered by score then paper id, and ``snapshot`` (the newest paper id
when paging started) hides papers added later, so pages do not shift or repeat
while the library grows.
"""

from __future__ import annotations

import re

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
from refserver.storage.models import Paper

# BM25 column weights: title, authors, abstract, keywords, journal, body.
WEIGHTS = (10.0, 4.0, 3.0, 3.0, 1.0, 1.0)
_PHRASE = re.compile(r'"([^"]*)"')


def fts_query(q: str | None) -> str | None:
    """A safe FTS5 MATCH expression for free user text (AND of quoted terms)."""
    if not q:
        return None
    parts: list[str] = []
    rest = q
    if q.count('"') >= 2:
        for phrase in _PHRASE.findall(q):
            words = re.findall(r"\w+", phrase)
            if words:
                parts.append('"' + " ".join(words) + '"')
        rest = _PHRASE.sub(" ", q)
    for chunk in rest.split():
        # Words joined by punctuation (state-of-the-art, title:foo) stay a phrase.
        words = re.findall(r"\w+", chunk)
        if not words:
            continue
        prefix = bool(re.search(r"\w\*[^\w]*$", chunk))
        parts.append('"' + " ".join(words) + '"' + ("*" if prefix else ""))
    return " ".join(parts) or None


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
    match = fts_query(q)
    if q and q.strip() and match is None:  # only punctuation: nothing can match
        return SearchPage(0, [], "keyword", snap, generation)
    if match is None:
        return _list_newest(s, conds, params, limit, offset, snap, generation)
    params.update(match=match, limit=limit, offset=offset)
    where = " AND ".join(["papers_fts MATCH :match", *conds])
    weights = ", ".join(str(w) for w in WEIGHTS)
    total = s.execute(
        text(
            f"SELECT count(*) FROM papers_fts JOIN papers p ON p.id = papers_fts.rowid WHERE {where}"
        ),
        params,
    ).scalar_one()
    rows = s.execute(
        text(
            f"SELECT p.id, bm25(papers_fts, {weights}) AS rank, "
            f"snippet(papers_fts, -1, char(2), char(3), '…', 24) AS snip "
            f"FROM papers_fts JOIN papers p ON p.id = papers_fts.rowid WHERE {where} "
            "ORDER BY rank, p.id LIMIT :limit OFFSET :offset"
        ),
        params,
    ).all()
    papers = _papers(s, [r[0] for r in rows])
    results = [
        result_from_paper(papers[pid], -float(rank), marks_to_html(snip or ""))
        for pid, rank, snip in rows
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
