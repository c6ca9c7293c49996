"""Reading a local Zotero data folder: ``zotero.sqlite`` (read-only) and ``storage/``.

The database is opened with ``mode=ro&immutable=1`` so a running Zotero (which
holds its own lock) is neither blocked nor touched. Items come with their
metadata (EAV tables ``itemData``/``itemDataValues``/``fields``), ordered
authors, collections (imported as tags, with their parent path) and Zotero tags,
and the PDF attachments found under ``storage/<attachment key>/``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refserver.interop.common import join_name, parse_year

if TYPE_CHECKING:
    from refserver.context import AppContext
    from refserver.ingest.bulk import BulkProgress, BulkReport

log = logging.getLogger(__name__)

SKIP_TYPES = ("note", "attachment", "annotation")
JOURNAL_FIELDS = ("publicationTitle", "proceedingsTitle", "bookTitle", "conferenceName")
LINK_IMPORTED = (0, 1)  # imported_file, imported_url: stored under storage/<key>/
LINK_FILE = 2  # linked_file: an absolute path (or "attachments:" relative to a base dir)


@dataclass
class ZoteroItem:
    item_id: int
    key: str
    item_type: str
    metadata: dict[str, Any]
    pdfs: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # attachments whose file is absent


@dataclass
class ZoteroImportReport:
    items: int = 0
    with_pdf: int = 0
    without_pdf: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    updated_existing: list[str] = field(default_factory=list)
    bulk: BulkReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "with_pdf": self.with_pdf,
            "without_pdf": list(self.without_pdf),
            "missing_files": list(self.missing_files),
            "updated_existing": list(self.updated_existing),
            "bulk": self.bulk.to_dict() if self.bulk else None,
        }


def open_readonly(db_path: Path) -> sqlite3.Connection:
    """Open ``zotero.sqlite`` without ever writing or locking it."""
    uri = Path(db_path).resolve().as_uri() + "?mode=ro&immutable=1"
    con = sqlite3.connect(uri, uri=True)
    con.row_factory = sqlite3.Row
    return con


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return (
        con.execute(
            "SELECT 1 FROM sqlite_master WHERE type IN ('table','view') AND name = ?", (name,)
        ).fetchone()
        is not None
    )


def _collection_paths(con: sqlite3.Connection) -> dict[int, str]:
    rows = {
        r["collectionID"]: (r["collectionName"], r["parentCollectionID"])
        for r in con.execute(
            "SELECT collectionID, collectionName, parentCollectionID FROM collections"
        )
    }
    out: dict[int, str] = {}
    for cid in rows:
        parts, seen, cur = [], set(), cid
        while cur in rows and cur not in seen:  # guard against a cycle in a damaged file
            seen.add(cur)
            name, parent = rows[cur]
            parts.append(name)
            cur = parent
        out[cid] = "/".join(reversed(parts))
    return out


def read_library(zotero_dir: Path) -> list[ZoteroItem]:
    """Every regular item (not notes, attachments or trashed items) with its PDFs."""
    zotero_dir = Path(zotero_dir)
    db = zotero_dir / "zotero.sqlite"
    if not db.is_file():
        raise FileNotFoundError(f"no zotero.sqlite in {zotero_dir}")
    con = open_readonly(db)
    try:
        fields_t = "fieldsCombined" if _has_table(con, "fieldsCombined") else "fields"
        types_t = "itemTypesCombined" if _has_table(con, "itemTypesCombined") else "itemTypes"
        deleted = (
            "AND i.itemID NOT IN (SELECT itemID FROM deletedItems)"
            if _has_table(con, "deletedItems")
            else ""
        )
        items: dict[int, ZoteroItem] = {}
        for r in con.execute(
            f"SELECT i.itemID, i.key, t.typeName FROM items i "
            f"JOIN {types_t} t ON t.itemTypeID = i.itemTypeID "
            f"WHERE t.typeName NOT IN ({','.join('?' * len(SKIP_TYPES))}) {deleted} "
            "ORDER BY i.itemID",
            SKIP_TYPES,
        ):
            items[r["itemID"]] = ZoteroItem(r["itemID"], r["key"], r["typeName"], {})
        data: dict[int, dict[str, str]] = defaultdict(dict)
        for r in con.execute(
            f"SELECT d.itemID, f.fieldName, v.value FROM itemData d "
            f"JOIN {fields_t} f ON f.fieldID = d.fieldID "
            "JOIN itemDataValues v ON v.valueID = d.valueID"
        ):
            if r["itemID"] in items:
                data[r["itemID"]][r["fieldName"]] = str(r["value"])
        creators: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for r in con.execute(
            "SELECT ic.itemID, c.firstName, c.lastName, c.fieldMode, ct.creatorType "
            "FROM itemCreators ic JOIN creators c ON c.creatorID = ic.creatorID "
            "LEFT JOIN creatorTypes ct ON ct.creatorTypeID = ic.creatorTypeID "
            "ORDER BY ic.itemID, ic.orderIndex"
        ):
            if r["fieldMode"] == 1:  # a single-field name (institution, group)
                name = join_name(None, None, r["lastName"])
            else:
                name = join_name(r["lastName"], r["firstName"])
            if name:
                creators[r["itemID"]].append((r["creatorType"] or "author", name))
        tags: dict[int, list[str]] = defaultdict(list)
        paths = _collection_paths(con)
        for r in con.execute("SELECT collectionID, itemID FROM collectionItems"):
            if r["collectionID"] in paths:
                tags[r["itemID"]].append(paths[r["collectionID"]])
        if _has_table(con, "itemTags") and _has_table(con, "tags"):
            for r in con.execute(
                "SELECT it.itemID, t.name FROM itemTags it JOIN tags t ON t.tagID = it.tagID"
            ):
                tags[r["itemID"]].append(r["name"])
        att_parent = "parentItemID"
        cols = {r[1] for r in con.execute("PRAGMA table_info(itemAttachments)")}
        if "parentItemID" not in cols:  # schemas before Zotero 5
            att_parent = "sourceItemID"
        ctype = "contentType" if "contentType" in cols else "mimeType"
        for r in con.execute(
            f"SELECT a.itemID, a.{att_parent} AS parent, a.linkMode, a.{ctype} AS ctype, "
            "a.path, i.key FROM itemAttachments a JOIN items i ON i.itemID = a.itemID "
            f"{'WHERE a.itemID NOT IN (SELECT itemID FROM deletedItems)' if deleted else ''} "
            "ORDER BY a.itemID"
        ):
            parent = items.get(r["parent"])
            path = r["path"] or ""
            is_pdf = (r["ctype"] or "") == "application/pdf" or path.lower().endswith(".pdf")
            if parent is None or not is_pdf:
                continue
            if r["linkMode"] in LINK_IMPORTED and path.startswith("storage:"):
                pdf = zotero_dir / "storage" / r["key"] / path[len("storage:") :]
            elif r["linkMode"] == LINK_FILE and path and not path.startswith("attachments:"):
                pdf = Path(path)
            else:
                parent.missing.append(path or f"attachment {r['key']}")
                continue
            if pdf.is_file():
                parent.pdfs.append(pdf)
            else:
                parent.missing.append(str(pdf))
        for item in items.values():
            d = data.get(item.item_id, {})
            names = creators.get(item.item_id, [])
            authors = [n for kind, n in names if kind == "author"] or [n for _, n in names]
            journal = next((d[k] for k in JOURNAL_FIELDS if d.get(k)), None)
            doi = d.get("DOI")
            if doi:
                doi = doi.strip().removeprefix("https://doi.org/").removeprefix("doi:")
            item.metadata = {
                k: v
                for k, v in {
                    "title": d.get("title"),
                    "authors": authors,
                    "year": parse_year(d.get("date")),
                    "journal": journal,
                    "doi": doi,
                    "abstract": d.get("abstractNote"),
                    "tags": sorted(set(tags.get(item.item_id, []))),
                }.items()
                if v not in (None, "", [])
            }
        return list(items.values())
    finally:
        con.close()


def zotero_import(
    ctx: AppContext,
    zotero_dir: Path,
    *,
    workers: int | None = None,
    progress_cb: Callable[[BulkProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    report: Path | None = None,
    username: str | None = None,
) -> ZoteroImportReport:
    """Import every item with a PDF; Zotero's metadata wins over extracted metadata.

    The metadata travels as job params (``{"metadata": {..., "_source": "zotero"}}``)
    so each field's source is recorded as ``zotero``. Papers already stored (same
    file) get Zotero's fields applied as a recorded edit instead.
    """
    from refserver.ingest.bulk import bulk_import

    items = read_library(zotero_dir)
    rep = ZoteroImportReport(items=len(items))
    params: dict[str, dict[str, Any]] = {}
    for it in items:
        rep.missing_files.extend(it.missing)
        if not it.pdfs:
            rep.without_pdf.append(it.metadata.get("title") or it.key)
            continue
        rep.with_pdf += 1
        pdf = str(it.pdfs[0].resolve())  # further PDFs of an item are usually supplements
        params[pdf] = {"metadata": {**it.metadata, "_source": "zotero"}, "zotero_key": it.key}
    bulk = bulk_import(
        ctx,
        list(params),
        workers=workers,
        progress_cb=progress_cb,
        should_cancel=should_cancel,
        params=params,
        username=username,
    )
    rep.bulk = bulk
    for o in bulk.already_stored:
        meta = params.get(o.file, {}).get("metadata") or {}
        if not o.doc_id or not meta:
            continue
        changes = {k: v for k, v in meta.items() if not k.startswith("_")}
        with ctx.db.read() as s:
            paper = ctx.library.get(s, o.doc_id)
            if paper is None:
                continue
            changes = {k: v for k, v in changes.items() if getattr(paper, k) != v}
        if changes:
            ctx.library.update_metadata(o.doc_id, changes, source="zotero", username=username)
            rep.updated_existing.append(o.doc_id)
    if report is not None:
        import json

        Path(report).write_text(json.dumps(rep.to_dict(), indent=2, default=str))
    return rep
