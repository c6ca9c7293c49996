"""Split the full-text index: metadata in ``papers_fts``, text in ``paper_bodies_fts``.

``papers_fts`` held each paper's metadata *and* the text of all its pages in one
row, so a title edit rewrote the paper's whole text (and the text was stored
twice). The text is now indexed apart, as external content over the view
``paper_bodies`` of ``pages`` (see ``refserver.storage.fts``).

Revision ID: 0003
Revises: vector_storage_0001
Create Date: 2026-11-27
"""

import json
from collections.abc import Sequence
from typing import Any

from alembic import op
from sqlalchemy import text

revision: str = "0003"
down_revision: str | None = "vector_storage_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported) so the migration keeps meaning what it meant.
TOKENIZE = "unicode61 remove_diacritics 2"
PAPER_BODIES = (
    "CREATE VIEW paper_bodies AS SELECT p.id AS id, coalesce(("
    "SELECT group_concat(t, char(10)) FROM ("
    "SELECT text AS t FROM pages WHERE paper_id = p.id ORDER BY page_number)), '') AS body "
    "FROM papers p",
    "CREATE VIRTUAL TABLE paper_bodies_fts USING fts5("
    f"body, content='paper_bodies', content_rowid='id', tokenize = '{TOKENIZE}')",
)


def _joined(value: object) -> str:
    if isinstance(value, str):
        value = json.loads(value or "[]")
    return "; ".join(str(v) for v in value or [])


def _metadata_rows(bind: Any) -> list[dict[str, Any]]:
    """Every paper's metadata as papers_fts columns (lists joined as storage.fts joins them)."""
    rows = bind.execute(
        text("SELECT id, title, authors, abstract, keywords, journal FROM papers")
    ).all()
    return [
        {
            "id": r.id,
            "title": r.title or "",
            "authors": _joined(r.authors),
            "abstract": r.abstract or "",
            "keywords": _joined(r.keywords),
            "journal": r.journal or "",
        }
        for r in rows
    ]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute("DROP TABLE IF EXISTS papers_fts")
    op.execute(
        "CREATE VIRTUAL TABLE papers_fts USING fts5("
        f"title, authors, abstract, keywords, journal, tokenize = '{TOKENIZE}')"
    )
    rows = _metadata_rows(bind)
    if rows:
        bind.execute(
            text(
                "INSERT INTO papers_fts (rowid, title, authors, abstract, keywords, journal) "
                "VALUES (:id, :title, :authors, :abstract, :keywords, :journal)"
            ),
            rows,
        )
    for statement in PAPER_BODIES:
        op.execute(statement)
    op.execute("INSERT INTO paper_bodies_fts (paper_bodies_fts) VALUES ('rebuild')")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute("DROP TABLE IF EXISTS paper_bodies_fts")
    op.execute("DROP VIEW IF EXISTS paper_bodies")
    op.execute("DROP TABLE IF EXISTS papers_fts")
    op.execute(
        "CREATE VIRTUAL TABLE papers_fts USING fts5("
        f"title, authors, abstract, keywords, journal, body, tokenize = '{TOKENIZE}')"
    )
    for row in _metadata_rows(bind):
        body = "\n".join(
            t
            for (t,) in bind.execute(
                text("SELECT text FROM pages WHERE paper_id = :id ORDER BY page_number"),
                {"id": row["id"]},
            )
        )
        bind.execute(
            text(
                "INSERT INTO papers_fts (rowid, title, authors, abstract, keywords, journal, body) "
                "VALUES (:id, :title, :authors, :abstract, :keywords, :journal, :body)"
            ),
            {**row, "body": body},
        )
