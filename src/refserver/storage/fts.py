"""Keeping the FTS5 index in step with papers, inside the writer's transaction."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from refserver.storage.models import Paper


def index_paper(session: Session, paper: Paper, body: str | None = None) -> None:
    """(Re)index one paper; ``body`` is its full text (pages joined) when known."""
    if session.get_bind().dialect.name != "sqlite":
        return
    if body is None:
        body = "\n".join(p.text for p in paper.pages)
    session.execute(text("DELETE FROM papers_fts WHERE rowid = :id"), {"id": paper.id})
    session.execute(
        text(
            "INSERT INTO papers_fts (rowid, title, authors, abstract, keywords, journal, body) "
            "VALUES (:id, :title, :authors, :abstract, :keywords, :journal, :body)"
        ),
        {
            "id": paper.id,
            "title": paper.title or "",
            "authors": "; ".join(paper.authors or []),
            "abstract": paper.abstract or "",
            "keywords": "; ".join(paper.keywords or []),
            "journal": paper.journal or "",
            "body": body,
        },
    )


def remove_paper(session: Session, paper_id: int) -> None:
    if session.get_bind().dialect.name != "sqlite":
        return
    session.execute(text("DELETE FROM papers_fts WHERE rowid = :id"), {"id": paper_id})
