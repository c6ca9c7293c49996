"""The full-text index (SQLite FTS5): two tables, so an edit rewrites only what changed.

* ``papers_fts`` holds a paper's metadata (title, authors, abstract, keywords,
  journal), rowid = ``papers.id``, written by :func:`index_paper` in the
  writer's transaction. A metadata edit rewrites this short row only.
* ``pages_fts`` indexes ``pages.text`` as an external-content table (rowid =
  ``pages.id``): the text is stored once, in ``pages``, and triggers on
  ``pages`` keep the index in step, whatever writes the rows. Page text is
  never rewritten by a metadata edit, so an incremental backup after edits
  carries the edited rows, not every edited paper's full text again.

A query matches a paper when every term is found in its metadata or in any of
its pages; the rank adds the metadata BM25 and the best page's BM25.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.orm import Session

from refserver.storage.models import Paper

# BM25 column weights of papers_fts: title, authors, abstract, keywords, journal.
META_WEIGHTS = (10.0, 4.0, 3.0, 3.0, 1.0)
TOKENIZE = "unicode61 remove_diacritics 2"
_PHRASE = re.compile(r'"([^"]*)"')

# Kept in step by the triggers of CREATE_PAGES_FTS (the FTS5 external-content recipe).
CREATE_PAGES_FTS = (
    "CREATE VIRTUAL TABLE pages_fts USING fts5("
    f"text, content='pages', content_rowid='id', tokenize='{TOKENIZE}')",
    "CREATE TRIGGER pages_fts_ai AFTER INSERT ON pages BEGIN "
    "INSERT INTO pages_fts (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER pages_fts_ad AFTER DELETE ON pages BEGIN "
    "INSERT INTO pages_fts (pages_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER pages_fts_au AFTER UPDATE OF text ON pages BEGIN "
    "INSERT INTO pages_fts (pages_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO pages_fts (rowid, text) VALUES (new.id, new.text); END",
)
CREATE_PAPERS_FTS = (
    "CREATE VIRTUAL TABLE papers_fts USING fts5("
    f"title, authors, abstract, keywords, journal, tokenize = '{TOKENIZE}')"
)


def match_terms(q: str | None) -> list[str]:
    """Free user text as FTS5 terms, each a quoted token or phrase (never FTS5 syntax).

    ``word*`` stays a prefix search, ``"two words"`` and words joined by
    punctuation such as ``state-of-the-art`` a phrase, so input like ``"`` or
    ``AND(`` cannot make a malformed MATCH expression.
    """
    if not q:
        return []
    parts: list[str] = []
    rest = q
    if q.count('"') >= 2:
        for phrase in _PHRASE.findall(q):
            words = re.findall(r"\w+", phrase)
            if words:
                parts.append('"' + " ".join(words) + '"')
        rest = _PHRASE.sub(" ", q)
    for chunk in rest.split():
        words = re.findall(r"\w+", chunk)
        if not words:
            continue
        prefix = bool(re.search(r"\w\*[^\w]*$", chunk))
        parts.append('"' + " ".join(words) + '"' + ("*" if prefix else ""))
    return parts


def matches(terms: list[str]) -> tuple[str, dict[str, str]]:
    """A SELECT of ``(pid, rank, page_id)`` for papers matching every term.

    ``rank`` is BM25-like (lower is better): the metadata row's weighted BM25
    plus the best page's; ``page_id`` is that best page (NULL when only the
    metadata matched). Each term may be found in the metadata or any page.
    """
    params = {"fts_any": " OR ".join(terms)}
    weights = ", ".join(str(w) for w in META_WEIGHTS)
    every = []
    for i, term in enumerate(terms):
        params[f"fts_t{i}"] = term
        every.append(
            f"h.pid IN (SELECT rowid FROM papers_fts WHERE papers_fts MATCH :fts_t{i} "
            f"UNION SELECT g.paper_id FROM pages_fts JOIN pages g ON g.id = pages_fts.rowid "
            f"WHERE pages_fts MATCH :fts_t{i})"
        )
    # MATERIALIZED keeps bm25() in its full-text query: flattened into the
    # aggregate below, SQLite refuses it ("unable to use function bm25").
    sql = (
        "WITH meta AS MATERIALIZED ("
        f" SELECT rowid AS pid, bm25(papers_fts, {weights}) AS r, NULL AS page_id"
        " FROM papers_fts WHERE papers_fts MATCH :fts_any),"
        " page AS MATERIALIZED ("
        " SELECT g.paper_id AS pid, bm25(pages_fts) AS r, g.id AS page_id"
        " FROM pages_fts JOIN pages g ON g.id = pages_fts.rowid"
        " WHERE pages_fts MATCH :fts_any),"
        # min() picks the row its bare column (page_id) comes from: the best page.
        " h AS (SELECT * FROM meta UNION ALL SELECT pid, min(r), page_id FROM page GROUP BY pid)"
        " SELECT h.pid AS pid, sum(h.r) AS rank, max(h.page_id) AS page_id FROM h"
    )
    if len(terms) == 1:  # every hit already has the one term
        return sql + " GROUP BY h.pid", {"fts_any": terms[0]}
    return sql + " WHERE " + " AND ".join(every) + " GROUP BY h.pid", params


def snippets(
    session: Session, terms: list[str], hits: list[tuple[int, int | None]], tokens: int = 24
) -> dict[int, str]:
    """The better of each paper's metadata and best-page snippet, marked with \\x02/\\x03."""
    any_term = " OR ".join(terms)
    out: dict[int, str] = {}
    for pid, page_id in hits:
        found = []
        for table, rowid in (("papers_fts", pid), ("pages_fts", page_id)):
            if rowid is None:
                continue
            snip = session.execute(
                text(
                    f"SELECT snippet({table}, -1, char(2), char(3), '…', {int(tokens)}) "
                    f"FROM {table} WHERE {table} MATCH :m AND rowid = :r"
                ),
                {"m": any_term, "r": rowid},
            ).scalar()
            if snip:
                found.append(snip)
        if found:
            out[pid] = max(found, key=lambda s: s.count("\x02"))
    return out


def index_paper(session: Session, paper: Paper) -> None:
    """(Re)index one paper's metadata; its pages are indexed by the ``pages`` triggers."""
    if session.get_bind().dialect.name != "sqlite":
        return
    session.execute(text("DELETE FROM papers_fts WHERE rowid = :id"), {"id": paper.id})
    session.execute(
        text(
            "INSERT INTO papers_fts (rowid, title, authors, abstract, keywords, journal) "
            "VALUES (:id, :title, :authors, :abstract, :keywords, :journal)"
        ),
        {
            "id": paper.id,
            "title": paper.title or "",
            "authors": "; ".join(paper.authors or []),
            "abstract": paper.abstract or "",
            "keywords": "; ".join(paper.keywords or []),
            "journal": paper.journal or "",
        },
    )


def remove_paper(session: Session, paper_id: int) -> None:
    if session.get_bind().dialect.name != "sqlite":
        return
    session.execute(text("DELETE FROM papers_fts WHERE rowid = :id"), {"id": paper_id})
