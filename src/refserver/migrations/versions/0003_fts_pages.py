"""Split the full-text index: metadata in ``papers_fts``, page text in ``pages_fts``.

``papers_fts`` held each paper's metadata *and* the text of all its pages in one
row, so a title edit rewrote the paper's whole text (and the text was stored
twice). Page text is now indexed once per page, as external content over
``pages`` (see ``refserver.storage.fts``).

Revision ID: 0003
Revises: vector_storage_0001
Create Date: 2026-11-27
"""

import json
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0003"
down_revision: str | None = "vector_storage_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not imported) so the migration keeps meaning what it meant.
TOKENIZE = "unicode61 remove_diacritics 2"
PAGES_FTS = (
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


def _joined(value: object) -> str:
    if isinstance(value, str):
        value = json.loads(value or "[]")
    return "; ".join(str(v) for v in value or [])


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute("DROP TABLE IF EXISTS papers_fts")
    op.execute(
        "CREATE VIRTUAL TABLE papers_fts USING fts5("
        f"title, authors, abstract, keywords, journal, tokenize = '{TOKENIZE}')"
    )
    rows = bind.execute(
        text("SELECT id, title, authors, abstract, keywords, journal FROM papers")
    ).all()
    if rows:
        bind.execute(
            text(
                "INSERT INTO papers_fts (rowid, title, authors, abstract, keywords, journal) "
                "VALUES (:id, :title, :authors, :abstract, :keywords, :journal)"
            ),
            [
                {
                    "id": r.id,
                    "title": r.title or "",
                    "authors": _joined(r.authors),
                    "abstract": r.abstract or "",
                    "keywords": _joined(r.keywords),
                    "journal": r.journal or "",
                }
                for r in rows
            ],
        )
    for statement in PAGES_FTS:
        op.execute(statement)
    op.execute("INSERT INTO pages_fts (pages_fts) VALUES ('rebuild')")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for name in ("pages_fts_ai", "pages_fts_ad", "pages_fts_au"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS pages_fts")
    op.execute("DROP TABLE IF EXISTS papers_fts")
    op.execute(
        "CREATE VIRTUAL TABLE papers_fts USING fts5("
        f"title, authors, abstract, keywords, journal, body, tokenize = '{TOKENIZE}')"
    )
    rows = bind.execute(
        text("SELECT id, title, authors, abstract, keywords, journal FROM papers")
    ).all()
    for r in rows:
        body = "\n".join(
            t
            for (t,) in bind.execute(
                text("SELECT text FROM pages WHERE paper_id = :id ORDER BY page_number"),
                {"id": r.id},
            )
        )
        bind.execute(
            text(
                "INSERT INTO papers_fts (rowid, title, authors, abstract, keywords, journal, body) "
                "VALUES (:id, :title, :authors, :abstract, :keywords, :journal, :body)"
            ),
            {
                "id": r.id,
                "title": r.title or "",
                "authors": _joined(r.authors),
                "abstract": r.abstract or "",
                "keywords": _joined(r.keywords),
                "journal": r.journal or "",
                "body": body,
            },
        )
