"""Citation export round-trips: our output parsed by well-kept parsers for each format."""

from __future__ import annotations

import json
from typing import Any

import bibtexparser
import jsonschema
import pytest
import rispy
from fastapi.testclient import TestClient

from refserver.interop import bibtex, csljson, ris
from refserver.interop.export import export_library
from tests.bulk.conftest import TRICKY, add_paper

# The structure of CSL-JSON items (citation-style-language/schema, csl-data.json),
# for the fields we write.
NAME = {
    "type": "object",
    "properties": {
        "family": {"type": "string"},
        "given": {"type": "string"},
        "literal": {"type": "string"},
    },
    "additionalProperties": False,
    "anyOf": [{"required": ["family"]}, {"required": ["literal"]}],
}
CSL_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["id", "type"],
        "properties": {
            "id": {"type": ["string", "number"]},
            "type": {"enum": ["article-journal", "document", "article", "paper-conference"]},
            "title": {"type": "string"},
            "author": {"type": "array", "items": NAME},
            "issued": {
                "type": "object",
                "properties": {
                    "date-parts": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 2,
                        "items": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 3,
                            "items": {"type": ["string", "number"]},
                        },
                    }
                },
                "required": ["date-parts"],
            },
            "container-title": {"type": "string"},
            "DOI": {"type": "string"},
            "abstract": {"type": "string"},
            "keyword": {"type": "string"},
            "note": {"type": "string"},
        },
        "additionalProperties": False,
    },
}


def _norm(s: str | None) -> str | None:
    return " ".join(s.split()) if s else s


@pytest.fixture
def library(ctx: Any) -> Any:
    for meta in TRICKY:
        add_paper(ctx, **dict(meta))
    return ctx


def _check(records: list[Any]) -> None:
    by_title = {_norm(r.title): r for r in records}
    assert len(records) == len(TRICKY)
    for meta in TRICKY:
        r = by_title[_norm(meta["title"])]
        assert r.authors == meta.get("authors", [])
        assert r.year == meta.get("year")
        assert r.doi == meta.get("doi")
        assert r.journal == meta.get("journal")
        assert _norm(r.abstract) == _norm(meta.get("abstract"))
        assert r.keywords == meta.get("keywords", [])


def test_bibtex_round_trip_with_bibtexparser(library: Any) -> None:
    text, n = export_library(library, "bibtex")
    assert n == 3
    lib = bibtexparser.parse_string(text)
    assert not lib.failed_blocks
    assert len({e.key for e in lib.entries}) == 3
    entry = next(e for e in lib.entries if "doi" in e.fields_dict)
    assert entry.entry_type == "article"
    assert entry["doi"] == "10.7717/peerj-cs.118"
    assert "{VESPA:}" in entry["title"]  # acronyms protected from style lowercasing
    assert "Webb, Andrew E. and" in entry["author"]
    assert "{ATLAS Collaboration}" in entry["author"]
    _check(bibtex.loads(text))


def test_ris_round_trip_with_rispy(library: Any) -> None:
    text, _ = export_library(library, "ris")
    entries = rispy.loads(text)
    assert len(entries) == 3
    art = next(e for e in entries if e.get("doi"))
    assert art["type_of_reference"] == "JOUR"
    assert art["authors"][0] == "Webb, Andrew E."
    assert art["journal_name"] == "PeerJ Computer Science"
    assert art["year"] == "2017"
    _check(ris.loads(text))


def test_csljson_validates_and_renders(library: Any) -> None:
    text, _ = export_library(library, "csljson")
    items = json.loads(text)
    jsonschema.validate(items, CSL_SCHEMA)
    art = next(i for i in items if i.get("DOI"))
    assert art["author"][0] == {"family": "Webb", "given": "Andrew E."}
    assert art["author"][2] == {"family": "van Beethoven", "given": "Ludwig"}
    assert art["author"][3] == {"literal": "ATLAS Collaboration"}
    assert art["issued"] == {"date-parts": [[2017]]}
    _check(csljson.loads(text))

    # citeproc-py (offline, its bundled Harvard style) renders the bibliography.
    from citeproc import (
        Citation,
        CitationItem,
        CitationStylesBibliography,
        CitationStylesStyle,
        formatter,
    )
    from citeproc.source.json import CiteProcJSON

    source = CiteProcJSON(items)
    style = CitationStylesStyle("harvard-cite-them-right", validate=False)
    bib = CitationStylesBibliography(style, source, formatter.plain)
    for it in items:
        bib.register(Citation([CitationItem(it["id"])]))
    rendered = [str(x) for x in bib.bibliography()]
    assert len(rendered) == 3
    joined = "\n".join(rendered)
    assert "Webb, A.E." in joined and "2017" in joined and "PeerJ Computer Science" in joined


def test_export_route(client: TestClient, auth: dict[str, str]) -> None:
    ctx = client.app.state.ctx
    ids = [add_paper(ctx, **dict(m)) for m in TRICKY]
    r = client.get("/export", params={"format": "bibtex"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-bibtex")
    assert "attachment" in r.headers["content-disposition"]
    assert len(bibtexparser.parse_string(r.text).entries) == 3

    r = client.get("/export", params={"format": "ris", "q": "vespa codon"})
    assert r.status_code == 200 and r.headers["x-record-count"] == "1"
    assert rispy.loads(r.text)[0]["doi"] == "10.7717/peerj-cs.118"

    r = client.get("/export", params={"format": "csljson", "doc_id": ids[1]})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.citationstyles.csl+json")
    assert [i["title"] for i in r.json()] == [TRICKY[1]["title"]]

    # Hostile query text is data, not FTS5 syntax.
    for q in ['"', "AND(", "title:*", 'a" OR "b']:
        r = client.get("/export", params={"format": "ris", "q": q})
        assert r.status_code == 200, (q, r.text)
    assert client.get("/export", params={"format": "docx"}).status_code == 400
    assert client.get("/export", params={"doc_id": "nope"}).status_code == 404
