"""CSL-JSON: the input format of citeproc processors (Zotero, Pandoc, citeproc-js/py)."""

from __future__ import annotations

import json
from typing import Any

from refserver.interop.common import (
    CitationRecord,
    join_name,
    parse_year,
    split_keywords,
    split_name,
)


def item(rec: CitationRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rec.key,
        "type": "article-journal" if rec.journal else "document",
    }
    if rec.title:
        out["title"] = rec.title
    if rec.authors:
        names = []
        for a in rec.authors:
            n = split_name(a)
            if n.literal is not None:
                names.append({"literal": n.literal})
            else:
                names.append({k: v for k, v in (("family", n.family), ("given", n.given)) if v})
        out["author"] = names
    if rec.year:
        out["issued"] = {"date-parts": [[int(rec.year)]]}
    if rec.journal:
        out["container-title"] = rec.journal
    if rec.doi:
        out["DOI"] = rec.doi
    if rec.abstract:
        out["abstract"] = rec.abstract
    if rec.keywords:
        out["keyword"] = ", ".join(rec.keywords)
    if rec.doc_id:
        out["note"] = f"refserver:{rec.doc_id}"
    return out


def dumps(records: list[CitationRecord]) -> str:
    return json.dumps([item(r) for r in records], ensure_ascii=False, indent=2) + "\n"


def loads(text: str) -> list[CitationRecord]:
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("items", [data])
    out = []
    for i, it in enumerate(data):
        authors = [
            join_name(a.get("family"), a.get("given"), a.get("literal"))
            for a in it.get("author") or []
            if isinstance(a, dict)
        ]
        year = None
        issued = it.get("issued") or {}
        parts = issued.get("date-parts") if isinstance(issued, dict) else None
        if parts and parts[0]:
            year = parse_year(parts[0][0])
        elif isinstance(issued, dict):
            year = parse_year(issued.get("raw") or issued.get("literal"))
        out.append(
            CitationRecord(
                key=str(it.get("id") or f"item{i + 1}"),
                title=it.get("title"),
                authors=[a for a in authors if a],
                year=year,
                journal=it.get("container-title"),
                doi=it.get("DOI"),
                abstract=it.get("abstract"),
                keywords=split_keywords(it.get("keyword")),
                extra={"type": it.get("type")},
            )
        )
    return out
