"""Matching a BibTeX/RIS/CSL-JSON file to stored papers and correcting their fields.

A record matches a paper by DOI (case-insensitive, without a resolver prefix)
or, failing that, by normalised title (``normalize_title``: case, accents and
punctuation folded); a title shared by several papers is only used when the
first author's family name picks one. Every change goes through
``Library.update_metadata`` with ``source="<format>:<file name>"`` so it is
recorded (and can be undone) like a user's edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from refserver.interop.common import CitationRecord, parse_file, split_name
from refserver.storage.library import normalize_title
from refserver.storage.models import Paper

if TYPE_CHECKING:
    from refserver.context import AppContext


@dataclass
class MetadataImportReport:
    source: str
    records: int = 0
    matched: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)

    @property
    def updated(self) -> list[dict[str, Any]]:
        return [m for m in self.matched if m["changed"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "records": self.records,
            "matched": self.matched,
            "updated": len(self.updated),
            "unmatched": self.unmatched,
            "ambiguous": self.ambiguous,
        }


def norm_doi(doi: str | None) -> str | None:
    if not doi:
        return None
    d = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", doi.strip(), flags=re.I)
    return d.lower() or None


def _family(name: str) -> str:
    n = split_name(name)
    return (normalize_title(n.family or n.literal or "") or "").split(" ")[-1]


def _changes(paper: Paper, rec: CitationRecord) -> dict[str, Any]:
    out = {}
    for name, value in rec.fields().items():
        current = getattr(paper, name)
        if name == "doi" and norm_doi(current) == norm_doi(value):
            continue
        if current != value:
            out[name] = value
    return out


def import_metadata(
    ctx: AppContext, path: Path, *, username: str | None = None, dry_run: bool = False
) -> MetadataImportReport:
    """Fill or correct stored papers' fields from a citation file; returns what changed."""
    path = Path(path)
    fmt, records = parse_file(path)
    source = f"{fmt}:{path.name}"
    rep = MetadataImportReport(source=source, records=len(records))
    by_doi: dict[str, str] = {}
    by_title: dict[str, list[tuple[str, list[str]]]] = {}
    with ctx.db.read() as s:
        for doc_id, doi, norm, authors in s.execute(
            select(Paper.doc_id, Paper.doi, Paper.norm_title, Paper.authors)
        ):
            if doi:
                by_doi.setdefault(doi.lower(), doc_id)
            if norm:
                by_title.setdefault(norm, []).append((doc_id, list(authors or [])))
    for rec in records:
        label = rec.title or rec.doi or rec.key
        doc_id, how = None, None
        d = norm_doi(rec.doi)
        if d and d in by_doi:
            doc_id, how = by_doi[d], "doi"
        elif rec.title and (cands := by_title.get(normalize_title(rec.title) or "")):
            if len(cands) == 1:
                doc_id, how = cands[0][0], "title"
            elif rec.authors:
                fam = _family(rec.authors[0])
                hits = [c for c in cands if c[1] and _family(c[1][0]) == fam]
                if len(hits) == 1:
                    doc_id, how = hits[0][0], "title+author"
            if doc_id is None:
                rep.ambiguous.append(label)
                continue
        if doc_id is None:
            rep.unmatched.append(label)
            continue
        with ctx.db.read() as s:
            paper = ctx.library.get(s, doc_id)
            changes = _changes(paper, rec) if paper is not None else {}
        if changes and not dry_run:
            ctx.library.update_metadata(doc_id, changes, source=source, username=username)
        rep.matched.append(
            {"doc_id": doc_id, "record": rec.key, "match": how, "changed": sorted(changes)}
        )
    return rep
