"""Papers like this one: the paper's vector against the ``papers`` collection.

The paper itself and its flagged duplicates (papers flagged as duplicates of it,
the paper it duplicates, and other duplicates of that same paper) are left out:
"more like this" should not answer with copies of this.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import or_, select

from refserver.embedding.model import decode_vector, mean_vector
from refserver.storage.models import Paper, Vector
from refserver.storage.vectors import PAPERS


def excluded_ids(s: Any, paper: Paper) -> set[str]:
    """The paper and every paper linked to it by a duplicate flag."""
    roots = {paper.doc_id}
    if paper.duplicate_of:
        roots.add(paper.duplicate_of)
    rows = s.execute(
        select(Paper.doc_id).where(or_(Paper.doc_id.in_(roots), Paper.duplicate_of.in_(roots)))
    ).scalars()
    return roots | set(rows)


def paper_vector(s: Any, paper: Paper) -> np.ndarray | None:
    """The stored paper vector, else the mean of its page vectors (from SQLite)."""
    rows = s.execute(
        select(Vector.kind, Vector.vector, Vector.dtype, Vector.dimension).where(
            Vector.paper_id == paper.id
        )
    ).all()
    whole = [decode_vector(v, dt, dim) for k, v, dt, dim in rows if k == "paper"]
    if whole:
        return whole[0]
    pages = [decode_vector(v, dt, dim) for k, v, dt, dim in rows if k == "page"]
    return mean_vector(np.vstack(pages)) if pages else None


def similar_papers(ctx: Any, doc_id: str, limit: int) -> dict[str, Any] | None:
    """``{query_doc_id, similar_papers, total_found}``; None when the paper is unknown."""
    with ctx.db.read() as s:
        paper = ctx.library.get(s, doc_id)
        if paper is None:
            return None
        skip = excluded_ids(s, paper)
        vec = paper_vector(s, paper)
        found: list[dict[str, Any]] = []
        if vec is not None and ctx.vectors is not None:
            res = ctx.vectors.collection(PAPERS).query(
                query_embeddings=vec[None, :],
                n_results=limit + len(skip) + 5,
                include=["metadatas", "distances"],
            )
            cands = [
                (str(m["doc_id"]), 1.0 - float(d))
                for m, d in zip(res["metadatas"][0], res["distances"][0], strict=True)
                if m and m.get("doc_id") and m["doc_id"] not in skip
            ]
            papers = {
                p.doc_id: p
                for p in s.execute(
                    select(Paper).where(Paper.doc_id.in_([c[0] for c in cands]))
                ).scalars()
            }
            for other, sim in cands:
                p = papers.get(other)
                if p is None:  # in the index but no longer in SQLite: not shown
                    continue
                found.append(
                    {
                        "doc_id": other,
                        "similarity": round(sim, 6),
                        "metadata": {
                            "title": p.title,
                            "authors": list(p.authors or []),
                            "year": p.year,
                            "journal": p.journal,
                            "doi": p.doi,
                        },
                    }
                )
                if len(found) >= limit:
                    break
    return {"query_doc_id": doc_id, "similar_papers": found, "total_found": len(found)}
