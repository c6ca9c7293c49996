"""Interoperability with reference managers: BibTeX, RIS, CSL-JSON, Zotero."""

from __future__ import annotations

from refserver.interop.common import FORMATS, CitationRecord, export_records, parse_file

__all__ = ["FORMATS", "CitationRecord", "export_records", "parse_file"]
