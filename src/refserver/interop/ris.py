"""RIS, written and read with rispy (the format Zotero, EndNote and Mendeley share)."""

from __future__ import annotations

import re

from refserver.interop.common import CitationRecord, join_name, parse_year, split_name


def _ris_name(name: str) -> str:
    n = split_name(name)
    if n.literal is not None:
        return n.literal
    return f"{n.family}, {n.given}" if n.given else (n.family or "")


def _clean(value: str) -> str:
    """RIS is line-based: one value per line."""
    return " ".join(str(value).split())


def dumps(records: list[CitationRecord]) -> str:
    import rispy

    entries = []
    for r in records:
        e: dict[str, object] = {"type_of_reference": "JOUR" if r.journal else "GEN", "id": r.key}
        if r.title:
            e["title"] = _clean(r.title)
        if r.authors:
            e["authors"] = [_ris_name(a) for a in r.authors if a.strip()]
        if r.year:
            e["year"] = str(r.year)
        if r.journal:
            e["journal_name"] = _clean(r.journal)
        if r.doi:
            e["doi"] = _clean(r.doi)
        if r.abstract:
            e["abstract"] = _clean(r.abstract)
        if r.keywords:
            e["keywords"] = [_clean(k) for k in r.keywords]
        entries.append(e)
    return rispy.dumps(entries)


def loads(text: str) -> list[CitationRecord]:
    import rispy

    out = []
    for i, e in enumerate(rispy.loads(text)):
        names = list(e.get("authors") or e.get("first_authors") or [])
        authors = []
        for n in names:
            fam, sep, given = str(n).partition(",")
            authors.append(join_name(fam, given) if sep else _clean(n))
        doi = e.get("doi")
        if doi:
            doi = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", str(doi).strip(), flags=re.I)
        out.append(
            CitationRecord(
                key=str(e.get("id") or f"ris{i + 1}"),
                title=e.get("title") or e.get("primary_title"),
                authors=[a for a in authors if a],
                year=parse_year(e.get("year") or e.get("publication_year") or e.get("date")),
                journal=e.get("journal_name")
                or e.get("secondary_title")
                or e.get("alternate_title3")
                or e.get("alternate_title1"),
                doi=doi,
                abstract=e.get("abstract") or e.get("notes_abstract"),
                keywords=[str(k) for k in (e.get("keywords") or [])],
                extra={"type": e.get("type_of_reference")},
            )
        )
    return out
