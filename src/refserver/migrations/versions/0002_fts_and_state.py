"""Full-text index (SQLite FTS5) and the library-state row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO library_state (id, generation, updated_at) VALUES (1, 0, CURRENT_TIMESTAMP)"
    )
    if op.get_bind().dialect.name == "sqlite":
        # rowid = papers.id; written by storage.fts in the same write transaction.
        op.execute(
            "CREATE VIRTUAL TABLE papers_fts USING fts5("
            "title, authors, abstract, keywords, journal, body, "
            "tokenize = 'unicode61 remove_diacritics 2')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS papers_fts")
    op.execute("DELETE FROM library_state WHERE id = 1")
