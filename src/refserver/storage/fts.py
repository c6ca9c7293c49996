"""The full-text index (SQLite FTS5): two tables, so an edit rewrites only what changed.

* ``papers_fts`` holds a paper's metadata (title, authors, abstract, keywords,
  journal), rowid = ``papers.id``. A metadata edit rewrites this short row only.
* ``paper_bodies_fts`` indexes a paper's full text as external content over the
  view ``paper_bodies`` (its pages in page order, joined by newlines), rowid =
  ``papers.id``. The text is stored once, in ``pages``; it is indexed when the
  paper is stored and removed (from the same view) before its pages go. No
  metadata edit touches it, so an incremental backup after edits carries the
  edited rows, not every edited paper's whole text again.

Both are written in the writer's transaction by :func:`index_paper`,
:func:`index_body` and :func:`remove_paper`. A query matches a paper when every
term is found in its metadata or its text; the rank adds the two BM25 scores.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from refserver.storage.db import Database, WritesPaused
from refserver.storage.models import Paper

# BM25 column weights of papers_fts: title, authors, abstract, keywords, journal.
META_WEIGHTS = (10.0, 4.0, 3.0, 3.0, 1.0)
TOKENIZE = "unicode61 remove_diacritics 2"
_PHRASE = re.compile(r'"([^"]*)"')

CREATE_PAPERS_FTS = (
    "CREATE VIRTUAL TABLE papers_fts USING fts5("
    f"title, authors, abstract, keywords, journal, tokenize = '{TOKENIZE}')"
)
# The ordered subquery is not flattened into the aggregate (an outer aggregate
# keeps a subquery's ORDER BY), so group_concat sees the pages in page order;
# index, snippets and 'delete' all read the text through this one view.
CREATE_PAPER_BODIES = (
    "CREATE VIEW paper_bodies AS SELECT p.id AS id, coalesce(("
    "SELECT group_concat(t, char(10)) FROM ("
    "SELECT text AS t FROM pages WHERE paper_id = p.id ORDER BY page_number)), '') AS body "
    "FROM papers p",
    "CREATE VIRTUAL TABLE paper_bodies_fts USING fts5("
    f"body, content='paper_bodies', content_rowid='id', tokenize = '{TOKENIZE}')",
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
    """A SELECT of ``(pid, rank)`` for papers matching every term.

    ``rank`` is BM25 as FTS5 gives it (lower is better): the metadata row's
    weighted score plus the text's. Each term may be found in either.
    """
    weights = ", ".join(str(w) for w in META_WEIGHTS)
    # MATERIALIZED keeps bm25() in its full-text query: flattened into the
    # aggregate below, SQLite refuses it ("unable to use function bm25").
    sql = (
        "WITH h AS MATERIALIZED ("
        f"SELECT rowid AS pid, bm25(papers_fts, {weights}) AS r"
        " FROM papers_fts WHERE papers_fts MATCH :fts_any"
        " UNION ALL SELECT rowid, bm25(paper_bodies_fts)"
        " FROM paper_bodies_fts WHERE paper_bodies_fts MATCH :fts_any)"
        " SELECT h.pid AS pid, sum(h.r) AS rank FROM h"
    )
    if len(terms) == 1:  # every hit already has the one term
        return sql + " GROUP BY h.pid", {"fts_any": terms[0]}
    params = {"fts_any": " OR ".join(terms)}
    every = []
    for i, term in enumerate(terms):
        params[f"fts_t{i}"] = term
        every.append(
            f"h.pid IN (SELECT rowid FROM papers_fts WHERE papers_fts MATCH :fts_t{i} "
            f"UNION SELECT rowid FROM paper_bodies_fts WHERE paper_bodies_fts MATCH :fts_t{i})"
        )
    return sql + " WHERE " + " AND ".join(every) + " GROUP BY h.pid", params


def snippets(
    session: Session, terms: list[str], ids: list[int], tokens: int = 24
) -> dict[int, str]:
    """Each paper's better snippet, metadata or text, with matches marked \\x02…\\x03."""
    any_term = " OR ".join(terms)
    out: dict[int, str] = {}
    for pid in ids:
        found = [
            snip
            for table in ("papers_fts", "paper_bodies_fts")
            if (
                snip := session.execute(
                    text(
                        f"SELECT snippet({table}, -1, char(2), char(3), '…', {int(tokens)}) "
                        f"FROM {table} WHERE {table} MATCH :m AND rowid = :r"
                    ),
                    {"m": any_term, "r": pid},
                ).scalar()
            )
        ]
        if found:
            out[pid] = max(found, key=lambda s: s.count("\x02"))
    return out


def index_paper(session: Session, paper: Paper) -> None:
    """(Re)index one paper's metadata (its text is indexed once, by :func:`index_body`)."""
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


def index_body(session: Session, paper_id: int) -> None:
    """Index a newly stored paper's text (its ``pages`` rows must be flushed)."""
    if session.get_bind().dialect.name != "sqlite":
        return
    session.execute(
        text(
            "INSERT INTO paper_bodies_fts (rowid, body) SELECT id, body FROM paper_bodies "
            "WHERE id = :id"
        ),
        {"id": paper_id},
    )


def remove_paper(session: Session, paper_id: int) -> None:
    """Drop a paper from both indexes; call it while its pages still exist."""
    if session.get_bind().dialect.name != "sqlite":
        return
    session.execute(text("DELETE FROM papers_fts WHERE rowid = :id"), {"id": paper_id})
    # External content: FTS5 reads the old text from paper_bodies to unindex it.
    session.execute(text("DELETE FROM paper_bodies_fts WHERE rowid = :id"), {"id": paper_id})


INDEXES = ("papers_fts", "paper_bodies_fts")


def coverage(conn: Connection) -> dict[str, dict[str, list[int]]]:
    """Per index: papers it lacks (``missing``) and rows of papers that are gone (``orphans``).

    Read from FTS5's ``_docsize`` shadow tables (one row per indexed rowid), so
    the check never reads the text itself.
    """
    out: dict[str, dict[str, list[int]]] = {}
    for table in INDEXES:
        out[table] = {
            "missing": [
                r[0]
                for r in conn.exec_driver_sql(
                    f"SELECT id FROM papers WHERE id NOT IN (SELECT id FROM {table}_docsize) "
                    "ORDER BY id"
                )
            ],
            "orphans": [
                r[0]
                for r in conn.exec_driver_sql(
                    f"SELECT id FROM {table}_docsize WHERE id NOT IN (SELECT id FROM papers) "
                    "ORDER BY id"
                )
            ],
        }
    return out


def is_indexed(conn: Connection, table: str, rowid: int) -> bool:
    """Whether ``table`` (one of :data:`INDEXES`) holds ``rowid``, from its ``_docsize``."""
    if table not in INDEXES:
        raise ValueError(f"not a full-text index: {table}")
    return (
        conn.exec_driver_sql(f"SELECT 1 FROM {table}_docsize WHERE id = ?", (rowid,)).first()
        is not None
    )


def rebuild_text(session: Session) -> None:
    """Re-create the text index from ``paper_bodies`` (one long write: repairs only)."""
    session.execute(text("INSERT INTO paper_bodies_fts (paper_bodies_fts) VALUES ('rebuild')"))


PAUSE_S = 0.002  # between compaction steps
# FTS5 ``%_data`` rowids carry the segment id above 31 page, 5 height and 1 doclist-
# index bits (FTS5_SEGMENT_ROWID; part of its on-disk format, which SQLite keeps).
SEGMENT_SHIFT = 37
# Compact when more than this share of the text index lies outside its largest
# segment. After a merge-down the big segment sits on FTS5's top level, and
# automerge joins it only once that level holds `automerge` (4) segments: the new,
# small segments merge among themselves, so an incremental carries at most a merge
# of what lies outside. Below this share a merge-down would rewrite the whole
# index (~0.2 GB on the backup bench, 3-4 s) to save less than 1% of the database.
COMPACT_OUTSIDE_SHARE = 0.05


@dataclass
class Compacted:
    transactions: int
    seconds: float
    worst_ms: float
    outside_share: float = 0.0  # of the index outside its largest segment, before
    skipped: bool = False  # it was already (nearly) one segment


def segment_pages(conn: Connection) -> dict[int, int]:
    """Leaf pages of each segment of the text index: two rowid seeks per segment.

    A segment's leaves are the ``%_data`` rowids of height 0 without the doclist-
    index bit, numbered without gaps from its first page still in use to its last;
    the segment ids are in ``%_idx``. Reading the blocks instead (their lengths)
    took 0.4-1.4 s on the backup bench's 216 MB index; this takes milliseconds.
    """
    leaves = f"FROM paper_bodies_fts_data WHERE id BETWEEN :lo AND :lo + {(1 << 31) - 1}"
    sql = text(f"SELECT (SELECT min(id) {leaves}), (SELECT max(id) {leaves})")
    out: dict[int, int] = {}
    for (seg,) in conn.exec_driver_sql("SELECT DISTINCT segid FROM paper_bodies_fts_idx"):
        first, last = conn.execute(sql, {"lo": int(seg) << SEGMENT_SHIFT}).one()
        if first is not None:
            out[int(seg)] = int(last) - int(first) + 1
    return out


def outside_share(conn: Connection) -> float:
    """Share of the text index's pages outside its largest segment (0.0: one or none)."""
    pages = segment_pages(conn)
    total = sum(pages.values())
    return (total - max(pages.values())) / total if total else 0.0


def compact(
    db: Database,
    *,
    step: int = 64,
    should_stop: Callable[[], bool] | None = None,
    min_outside_share: float = COMPACT_OUTSIDE_SHARE,
) -> Compacted:
    """Merge the text index into one segment, ``step`` pages per short write transaction.

    FTS5 keeps adding segments and merging them (its ``automerge``), so pages of
    the index written long ago are rewritten by later inserts, and every such
    page lands in the next incremental backup. Run right before a full backup,
    the merge-down puts the whole index in that full; the incrementals after it
    carry their own new segments and the merges among those, not merges with
    the old index. Skipped while no more than ``min_outside_share`` of the index
    lies outside its largest segment (see :data:`COMPACT_OUTSIDE_SHARE`; 0 forces
    it). Each step holds the writer for one short transaction (FTS5's
    ``'merge', -N``: merge work of N pages, every level) and then pauses, so
    other writes get their turn; it stops when a step finds nothing left to
    merge, or when ``should_stop`` says so.
    """
    t0 = time.monotonic()
    n, worst = 0, 0.0
    if not db.is_sqlite:
        return Compacted(0, 0.0, 0.0)
    with db.read() as s:
        share = outside_share(s.connection())
    if share <= min_outside_share:  # 0 forces it, unless there is nothing to merge
        return Compacted(0, round(time.monotonic() - t0, 3), 0.0, round(share, 4), skipped=True)
    while should_stop is None or not should_stop():
        t = time.monotonic()
        try:
            with db.write(bump=False) as s:
                raw = s.connection().connection.driver_connection
                before = raw.total_changes
                s.execute(
                    text(
                        "INSERT INTO paper_bodies_fts (paper_bodies_fts, rank) VALUES ('merge', :n)"
                    ),
                    {"n": -abs(int(step))},
                )
                done = raw.total_changes - before < 2  # FTS5: under 2 changes = no work
        except WritesPaused:  # a restore is swapping files in: the index can wait
            break
        n += 1
        worst = max(worst, time.monotonic() - t)
        if done:
            break
        # Python's lock is not fair: re-taken at once, it starves a waiting writer
        # (the bench saw one wait 1.3 s). A short pause lets it in between steps.
        time.sleep(PAUSE_S)
    return Compacted(n, round(time.monotonic() - t0, 3), round(worst * 1000, 1), round(share, 4))
