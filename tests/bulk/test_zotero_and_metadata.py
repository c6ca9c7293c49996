"""Zotero import from a real-schema ``zotero.sqlite`` fixture, and BibTeX/RIS metadata import."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import select

from refserver.interop.metadata_import import import_metadata
from refserver.interop.zotero import read_library, zotero_import
from refserver.storage.models import FieldEdit, Paper
from tests.bulk.conftest import add_paper
from tests.bulk.synth import make_paper_pdf

# Zotero's own DDL (resource/schema/system.sql and userdata.sql, schema 107+), the
# tables an import reads.
ZOTERO_DDL = """
CREATE TABLE itemTypes (itemTypeID INTEGER PRIMARY KEY, typeName TEXT, templateItemTypeID INT,
    display INT DEFAULT 1);
CREATE TABLE fields (fieldID INTEGER PRIMARY KEY, fieldName TEXT, fieldFormatID INT);
CREATE TABLE creatorTypes (creatorTypeID INTEGER PRIMARY KEY, creatorType TEXT);
CREATE TABLE libraries (libraryID INTEGER PRIMARY KEY, type TEXT NOT NULL, editable INT NOT NULL,
    filesEditable INT NOT NULL, version INT NOT NULL DEFAULT 0, storageVersion INT NOT NULL DEFAULT 0,
    lastSync INT NOT NULL DEFAULT 0, archived INT NOT NULL DEFAULT 0);
CREATE TABLE items (itemID INTEGER PRIMARY KEY, itemTypeID INT NOT NULL,
    dateAdded TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    dateModified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    clientDateModified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    libraryID INT NOT NULL, key TEXT NOT NULL, version INT NOT NULL DEFAULT 0,
    synced INT NOT NULL DEFAULT 0, UNIQUE (libraryID, key),
    FOREIGN KEY (libraryID) REFERENCES libraries(libraryID) ON DELETE CASCADE);
CREATE TABLE itemDataValues (valueID INTEGER PRIMARY KEY, value UNIQUE);
CREATE TABLE itemData (itemID INT, fieldID INT, valueID, PRIMARY KEY (itemID, fieldID),
    FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE,
    FOREIGN KEY (valueID) REFERENCES itemDataValues(valueID));
CREATE TABLE itemAttachments (itemID INTEGER PRIMARY KEY, parentItemID INT, linkMode INT,
    contentType TEXT, charsetID INT, path TEXT, syncState INT DEFAULT 0, storageModTime INT,
    storageHash TEXT,
    FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE,
    FOREIGN KEY (parentItemID) REFERENCES items(itemID) ON DELETE CASCADE);
CREATE TABLE itemNotes (itemID INTEGER PRIMARY KEY, parentItemID INT, note TEXT, title TEXT);
CREATE TABLE tags (tagID INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE itemTags (itemID INT NOT NULL, tagID INT NOT NULL, type INT NOT NULL,
    PRIMARY KEY (itemID, tagID));
CREATE TABLE creators (creatorID INTEGER PRIMARY KEY, firstName TEXT, lastName TEXT,
    fieldMode INT, UNIQUE (lastName, firstName, fieldMode));
CREATE TABLE itemCreators (itemID INT NOT NULL, creatorID INT NOT NULL,
    creatorTypeID INT NOT NULL DEFAULT 1, orderIndex INT NOT NULL DEFAULT 0,
    PRIMARY KEY (itemID, creatorID, creatorTypeID, orderIndex), UNIQUE (itemID, orderIndex));
CREATE TABLE collections (collectionID INTEGER PRIMARY KEY, collectionName TEXT NOT NULL,
    parentCollectionID INT DEFAULT NULL,
    clientDateModified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, libraryID INT NOT NULL,
    key TEXT NOT NULL, version INT NOT NULL DEFAULT 0, synced INT NOT NULL DEFAULT 0,
    UNIQUE (libraryID, key));
CREATE TABLE collectionItems (collectionID INT NOT NULL, itemID INT NOT NULL,
    orderIndex INT NOT NULL DEFAULT 0, PRIMARY KEY (collectionID, itemID));
CREATE TABLE deletedItems (itemID INTEGER PRIMARY KEY,
    dateDeleted DEFAULT CURRENT_TIMESTAMP NOT NULL);
INSERT INTO itemTypes VALUES (1,'note',NULL,0),(2,'book',NULL,2),(4,'journalArticle',NULL,2),
    (14,'attachment',NULL,0),(33,'conferencePaper',NULL,1);
INSERT INTO fields VALUES (12,'publicationTitle',NULL),(14,'date',NULL),(26,'DOI',NULL),
    (90,'abstractNote',NULL),(110,'title',NULL),(114,'proceedingsTitle',NULL);
INSERT INTO creatorTypes VALUES (1,'author'),(2,'contributor'),(3,'editor');
INSERT INTO libraries VALUES (1,'user',1,1,0,0,0,0);
"""


def build_zotero(root: Path, linked_pdf: Path) -> Path:
    """A Zotero data folder: zotero.sqlite + storage/<KEY>/ attachments."""
    root.mkdir(parents=True)
    con = sqlite3.connect(root / "zotero.sqlite")
    con.executescript(ZOTERO_DDL)
    values: dict[str, int] = {}

    def item(item_id: int, type_id: int, key: str, **data: str) -> None:
        con.execute(
            "INSERT INTO items (itemID, itemTypeID, libraryID, key) VALUES (?,?,1,?)",
            (item_id, type_id, key),
        )
        fid = {"title": 110, "date": 14, "DOI": 26, "publicationTitle": 12,
               "abstractNote": 90, "proceedingsTitle": 114}  # fmt: skip
        for name, value in data.items():
            if value not in values:
                values[value] = len(values) + 1
                con.execute("INSERT INTO itemDataValues VALUES (?,?)", (values[value], value))
            con.execute("INSERT INTO itemData VALUES (?,?,?)", (item_id, fid[name], values[value]))

    def creator(cid: int, first: str | None, last: str, mode: int = 0) -> None:
        con.execute("INSERT INTO creators VALUES (?,?,?,?)", (cid, first, last, mode))

    # 1: a journal article with an imported PDF, two authors and an editor, in a
    # nested collection and with a Zotero tag.
    item(1, 4, "ART00001", title="Zotero Knows Best: Curated Title", date="2017-06-05 2017-06-05",
         DOI="10.1234/zotero.curated", publicationTitle="Journal of Curation",
         abstractNote="The curated abstract.")  # fmt: skip
    creator(1, "Andrew E.", "Webb")
    creator(2, "Thomas A.", "Walsh")
    creator(3, "Erin", "Editor")
    con.executemany(
        "INSERT INTO itemCreators VALUES (?,?,?,?)", [(1, 1, 1, 0), (1, 2, 1, 1), (1, 3, 3, 2)]
    )
    con.execute(
        "INSERT INTO collections (collectionID, collectionName, libraryID, key) VALUES (1,'Biology',1,'COLL0001')"
    )
    con.execute(
        "INSERT INTO collections (collectionID, collectionName, parentCollectionID, libraryID, key) VALUES (2,'Evolution',1,1,'COLL0002')"
    )
    con.execute("INSERT INTO collectionItems VALUES (2, 1, 0)")
    con.execute("INSERT INTO tags VALUES (1, 'to-read')")
    con.execute("INSERT INTO itemTags VALUES (1, 1, 0)")
    item(10, 14, "ATTKEY01", title="Full Text PDF")
    con.execute(
        "INSERT INTO itemAttachments (itemID, parentItemID, linkMode, contentType, path) VALUES (10, 1, 1, 'application/pdf', 'storage:paper.pdf')"
    )
    make_paper_pdf(root / "storage" / "ATTKEY01" / "paper.pdf", 7001, pages=2, words_per_page=120,
                   title="A Different Title Printed In The PDF", doi="10.9999/printed.doi")  # fmt: skip

    # 2: a conference paper whose PDF is a linked file; a group author (single field).
    item(2, 33, "CONF0001", title="Linked File Conference Paper", date="2019",
         proceedingsTitle="Proceedings of Linking")  # fmt: skip
    creator(4, None, "CMS Collaboration", 1)
    con.execute("INSERT INTO itemCreators VALUES (2, 4, 1, 0)")
    item(11, 14, "ATTKEY02")
    con.execute("INSERT INTO itemAttachments (itemID, parentItemID, linkMode, contentType, path) VALUES (11, 2, 2, 'application/pdf', ?)", (str(linked_pdf),))  # fmt: skip

    # 3: a book without any attachment; 4: a trashed article; 5: a missing file; 6: a note.
    item(3, 2, "BOOK0001", title="A Book Without PDF", date="2001")
    item(4, 4, "TRASH001", title="Trashed Article")
    item(12, 14, "ATTKEY03")
    con.execute("INSERT INTO itemAttachments (itemID, parentItemID, linkMode, contentType, path) VALUES (12, 4, 0, 'application/pdf', 'storage:trash.pdf')")  # fmt: skip
    make_paper_pdf(root / "storage" / "ATTKEY03" / "trash.pdf", 7003, pages=1)
    con.execute("INSERT INTO deletedItems (itemID) VALUES (4)")
    item(5, 4, "MISS0001", title="Missing Attachment")
    item(13, 14, "ATTKEY04")
    con.execute("INSERT INTO itemAttachments (itemID, parentItemID, linkMode, contentType, path) VALUES (13, 5, 0, 'application/pdf', 'storage:gone.pdf')")  # fmt: skip
    item(6, 1, "NOTE0001")
    con.commit()
    con.close()
    return root


def test_zotero_import(ctx: Any, tmp_path: Path) -> None:
    linked = make_paper_pdf(tmp_path / "linked.pdf", 7002, pages=2, words_per_page=120)
    zdir = build_zotero(tmp_path / "Zotero", linked)
    db = zdir / "zotero.sqlite"
    before = hashlib.sha256(db.read_bytes()).hexdigest()

    # Zotero running holds its database locked: the read-only, immutable open still works.
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        items = read_library(zdir)
    finally:
        holder.rollback()
        holder.close()
    titles = sorted(i.metadata.get("title", "") for i in items)
    assert titles == sorted(
        [
            "Zotero Knows Best: Curated Title",
            "Linked File Conference Paper",
            "A Book Without PDF",
            "Missing Attachment",
        ]  # fmt: skip
    )  # no note, no attachment items, no trashed item

    rep = zotero_import(ctx, zdir, workers=1)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # never written
    assert rep.items == 4 and rep.with_pdf == 2
    assert rep.without_pdf == ["A Book Without PDF", "Missing Attachment"]
    assert any("gone.pdf" in m for m in rep.missing_files)
    assert rep.bulk is not None and len(rep.bulk.imported) == 2

    with ctx.db.read() as s:
        papers = {p.title: p for p in s.execute(select(Paper)).scalars()}
    art = papers["Zotero Knows Best: Curated Title"]  # Zotero's title beat the printed one
    assert art.doi == "10.1234/zotero.curated"
    assert art.authors == ["Andrew E. Webb", "Thomas A. Walsh"]  # the editor is not an author
    assert art.year == 2017 and art.journal == "Journal of Curation"
    assert art.abstract == "The curated abstract."
    assert sorted(art.tags) == ["Biology/Evolution", "to-read"]
    for f in ("title", "doi", "authors", "year", "journal", "abstract", "tags"):
        assert art.field_sources[f] == "zotero", f
    conf = papers["Linked File Conference Paper"]
    assert conf.authors == ["CMS Collaboration"] and conf.journal == "Proceedings of Linking"
    assert conf.year == 2019
    assert "Trashed Article" not in papers

    # Importing again stores nothing new.
    again = zotero_import(ctx, zdir, workers=1)
    assert again.bulk is not None and len(again.bulk.already_stored) + len(again.bulk.imported) == 2
    with ctx.db.read() as s:
        assert len(s.execute(select(Paper)).scalars().all()) == 2


def test_zotero_metadata_applies_to_an_already_stored_pdf(ctx: Any, tmp_path: Path) -> None:
    from refserver.ingest.bulk import bulk_import

    linked = make_paper_pdf(tmp_path / "linked.pdf", 7002, pages=2, words_per_page=120)
    bulk_import(ctx, [linked], workers=0)  # stored first with extracted metadata
    zdir = build_zotero(tmp_path / "Zotero", linked)
    rep = zotero_import(ctx, zdir, workers=1)
    assert rep.updated_existing
    with ctx.db.read() as s:
        p = s.execute(select(Paper).where(Paper.doc_id == rep.updated_existing[0])).scalar_one()
    assert p.title == "Linked File Conference Paper" and p.field_sources["title"] == "zotero"


BIB = r"""
@article{fix1,
  title = {Corrected Title of the {VESPA} Paper},
  author = {Webb, Andrew E. and Walsh, Thomas A.},
  year = {2017},
  journal = {PeerJ Computer Science},
  doi = {https://doi.org/10.7717/PEERJ-CS.118},
}
@inproceedings{fill2,
  title = {deep learning for particle   DETECTORS!},
  author = {Novak, Anna},
  year = {2021},
  doi = {10.5555/filled.doi},
  booktitle = {Proc. of Detectors},
}
@misc{nomatch,
  title = {Nothing Like This Is Stored},
  year = {1999},
}
"""


def test_bibtex_metadata_import_fills_and_corrects(ctx: Any, tmp_path: Path) -> None:
    a = add_paper(ctx, title="VESPA: large-scale analyses", authors=["A. Webb"],
                  doi="10.7717/peerj-cs.118", year=2016)  # fmt: skip
    b = add_paper(ctx, title="Deep Learning for Particle Detectors", authors=["Anna Novak"])
    bib = tmp_path / "refs.bib"
    bib.write_text(BIB)
    rep = import_metadata(ctx, bib)
    assert rep.source == "bibtex:refs.bib"
    assert rep.unmatched == ["Nothing Like This Is Stored"]
    matched = {m["doc_id"]: m for m in rep.matched}
    assert matched[a]["match"] == "doi" and matched[b]["match"] == "title"
    assert "doi" not in matched[a]["changed"]  # same DOI up to case and resolver prefix
    with ctx.db.read() as s:
        pa = ctx.library.get(s, a)
        pb = ctx.library.get(s, b)
        edits = s.execute(select(FieldEdit).where(FieldEdit.paper_id == pa.id)).scalars().all()
    assert pa.title == "Corrected Title of the VESPA Paper" and pa.year == 2017
    assert pa.authors == ["Andrew E. Webb", "Thomas A. Walsh"]
    assert pa.journal == "PeerJ Computer Science"
    assert pa.field_sources["title"] == "bibtex:refs.bib"
    assert {e.field for e in edits} >= {"title", "year", "authors", "journal"}
    assert all(e.new_source == "bibtex:refs.bib" for e in edits)
    assert pb.doi == "10.5555/filled.doi" and pb.year == 2021
    assert pb.journal == "Proc. of Detectors"
    assert pb.field_sources["doi"] == "bibtex:refs.bib"
    # The edit is undoable like any other.
    title_edit = next(e for e in edits if e.field == "title")
    ctx.library.undo_edit(title_edit.id)
    with ctx.db.read() as s:
        assert ctx.library.get(s, a).title == "VESPA: large-scale analyses"


def test_ris_metadata_import(ctx: Any, tmp_path: Path) -> None:
    d = add_paper(ctx, title="Soil Carbon Under Climate Change", authors=["Lena Meyer"])
    ris = tmp_path / "refs.ris"
    ris.write_text(
        "TY  - JOUR\nTI  - Soil carbon under climate change\nAU  - Meyer, Lena\n"
        "PY  - 2015\nJO  - Soil Science\nDO  - 10.4444/soil.2015\nER  - \n"
    )
    rep = import_metadata(ctx, ris)
    assert rep.source == "ris:refs.ris" and len(rep.updated) == 1
    with ctx.db.read() as s:
        p = ctx.library.get(s, d)
    assert (p.year, p.journal, p.doi) == (2015, "Soil Science", "10.4444/soil.2015")
    assert p.field_sources["journal"] == "ris:refs.ris"
