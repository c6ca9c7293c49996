"""Shapes and helpers shared by every search kind: filters, hits, hydration, snippets.

Search results always come from SQLite (the truth, DESIGN.md §1): the vector
index only proposes candidates, so an entry ChromaDB still holds for a deleted
paper never reaches a user.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from refserver.storage.models import Paper

MARK_OPEN = "\x02"
MARK_CLOSE = "\x03"
SNIPPET_WORDS = 32
MAX_SNIPPET_SCAN = 5000
_PUNCT = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum())
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Filters:
    """Metadata filters every search kind accepts; applied in SQLite."""

    title: str | None = None
    author: str | None = None
    year: int | None = None
    year_from: int | None = None
    year_to: int | None = None
    journal: str | None = None

    def active(self) -> bool:
        return any(v not in (None, "") for v in asdict(self).values())

    def key(self) -> tuple[Any, ...]:
        return tuple(asdict(self).values())

    def sql(self, alias: str = "p") -> tuple[list[str], dict[str, Any]]:
        """SQL conditions on ``papers`` (as ``alias``) with their bound parameters."""
        conds: list[str] = []
        params: dict[str, Any] = {}
        if self.title:
            conds.append(f"{alias}.title LIKE :f_title ESCAPE '\\'")
            params["f_title"] = _like(self.title)
        if self.journal:
            conds.append(f"{alias}.journal LIKE :f_journal ESCAPE '\\'")
            params["f_journal"] = _like(self.journal)
        if self.author:
            # json_each decodes the JSON list (non-ASCII names are stored escaped).
            conds.append(
                f"EXISTS (SELECT 1 FROM json_each({alias}.authors) "
                "WHERE json_each.value LIKE :f_author ESCAPE '\\')"
            )
            params["f_author"] = _like(self.author)
        if self.year is not None:
            conds.append(f"{alias}.year = :f_year")
            params["f_year"] = self.year
        if self.year_from is not None:
            conds.append(f"{alias}.year >= :f_year_from")
            params["f_year_from"] = self.year_from
        if self.year_to is not None:
            conds.append(f"{alias}.year <= :f_year_to")
            params["f_year_to"] = self.year_to
        return conds, params


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass
class Hit:
    """One page a vector search proposed: paper, page number, cosine similarity."""

    doc_id: str
    page: int
    similarity: float


@dataclass
class Result:
    """One paper in a result list (the public item shape plus optional extras)."""

    id: int
    doc_id: str
    title: str | None
    authors: list[str]
    year: int | None
    journal: str | None
    score: float
    snippet: str
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "doc_id": self.doc_id,
            "title": self.title,
            "authors": list(self.authors or []),
            "year": self.year,
            "journal": self.journal,
            "score": float(self.score),
            "snippet": self.snippet or "",
        }
        out.update(self.extra)
        return out


@dataclass
class SearchPage:
    """A page of results; ``total`` counts every match, not just this page."""

    total: int
    results: list[Result]
    mode: str
    snapshot: int
    generation: int
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self, query: str | None, limit: int, offset: int) -> dict[str, Any]:
        return {
            "query": query or "",
            "mode": self.mode,
            "total": int(self.total),
            "limit": limit,
            "offset": offset,
            "snapshot": self.snapshot,
            "generation": self.generation,
            "results": [r.public() for r in self.results],
            **self.extra,
        }


def result_from_paper(p: Any, score: float, snippet: str, **extra: Any) -> Result:
    return Result(
        id=p.id,
        doc_id=p.doc_id,
        title=p.title,
        authors=list(p.authors or []),
        year=p.year,
        journal=p.journal,
        score=float(score),
        snippet=snippet,
        extra=dict(extra),
    )


def current_snapshot(s: Session) -> int:
    """The newest paper id: later papers get larger ids, so ``id <= snapshot`` pins a view."""
    return int(s.execute(text("SELECT coalesce(max(id), 0) FROM papers")).scalar_one())


def allowed_papers(
    s: Session, doc_ids: list[str], filters: Filters, snapshot: int | None
) -> dict[str, int]:
    """{doc_id: paper id} of those among ``doc_ids`` SQLite holds and the filters allow.

    Only ids are read here: candidates are many, full rows are loaded for the
    result window alone (``load_papers``). One statement for any number of ids
    (a JSON list), so a batch of queries checks all its candidates at once.
    """
    if not doc_ids:
        return {}
    conds, params = filters.sql("p")
    if snapshot is not None:
        conds.append("p.id <= :snapshot")
        params["snapshot"] = snapshot
    where = " AND ".join(["p.doc_id IN (SELECT value FROM json_each(:doc_ids))", *conds])
    params["doc_ids"] = json.dumps(list(dict.fromkeys(doc_ids)))
    rows = s.execute(text(f"SELECT p.doc_id, p.id FROM papers p WHERE {where}"), params)
    return {doc_id: pid for doc_id, pid in rows}


def load_papers(s: Session, paper_ids: list[int]) -> dict[int, Any]:
    """The result fields of papers by id (rows with ``id``, ``doc_id``, ``title``,
    ``authors``, ``year``, ``journal``: what ``result_from_paper`` reads).

    Plain rows, not ORM objects: building a ``Paper`` instance cost ~50 µs, a third
    of the SQLite time of a batch of result pages.
    """
    out: dict[int, Any] = {}
    unique = sorted(set(paper_ids))
    cols = (Paper.id, Paper.doc_id, Paper.title, Paper.authors, Paper.year, Paper.journal)
    for i in range(0, len(unique), 500):
        for row in s.execute(select(*cols).where(Paper.id.in_(unique[i : i + 500]))):
            out[row.id] = row
    return out


_PAGE_TEXTS = text(
    "SELECT pg.paper_id, pg.page_number, pg.text FROM json_each(:pairs) j "
    "JOIN pages pg ON pg.paper_id = json_extract(j.value, '$[0]') "
    "AND pg.page_number = json_extract(j.value, '$[1]')"
)


def page_texts(s: Session, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """Text of (paper id, page number) pairs: one statement, one index look-up per pair."""
    if not pairs:
        return {}
    wanted = sorted(set(pairs))
    rows = s.execute(_PAGE_TEXTS, {"pairs": json.dumps(wanted)})
    return {(pid, num): body or "" for pid, num, body in rows}


def query_terms(query: str | None) -> list[str]:
    return [w.lower() for w in _WORD.findall(query or "") if len(w) > 1]


def make_snippet(body: str, terms: list[str], words: int = SNIPPET_WORDS) -> str:
    """The window of ``body`` with most query words, HTML-escaped, matches in <mark>."""
    tokens = body.split()[:MAX_SNIPPET_SCAN]
    if not tokens:
        return ""
    wanted = set(terms)
    flags = [bool(wanted) and t.strip(_PUNCT).lower() in wanted for t in tokens]
    best_start = 0
    if len(tokens) > words and any(flags):
        run = best = sum(flags[:words])
        for start in range(1, len(tokens) - words + 1):
            run += flags[start + words - 1] - flags[start - 1]
            if run > best:
                best, best_start = run, start
    window = tokens[best_start : best_start + words]
    parts = [
        f"{MARK_OPEN}{t}{MARK_CLOSE}" if flags[best_start + i] else t for i, t in enumerate(window)
    ]
    snippet = " ".join(parts)
    if best_start > 0:
        snippet = "…" + snippet
    if best_start + words < len(tokens):
        snippet += "…"
    return marks_to_html(snippet)


def marks_to_html(snippet: str) -> str:
    """Escape a snippet for HTML and turn the private match marks into <mark> tags."""
    escaped = html.escape(" ".join(snippet.split()), quote=False)
    return escaped.replace(MARK_OPEN, "<mark>").replace(MARK_CLOSE, "</mark>")
