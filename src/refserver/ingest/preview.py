"""Render a page thumbnail for the library UI."""

from __future__ import annotations

import os
from pathlib import Path

import pymupdf

__all__ = ["render_preview"]


def render_preview(
    doc: pymupdf.Document, out_path: Path, *, page: int = 0, width: int = 600
) -> None:
    """Write page ``page`` (0-based) of ``doc`` as a PNG ``width`` pixels wide.

    The file is written to a temporary name and renamed, so a reader never
    sees a half-written preview.
    """
    if width <= 0:
        raise ValueError("width must be positive")
    if not 0 <= page < doc.page_count:
        raise ValueError(f"page {page} out of range (document has {doc.page_count})")
    pg = doc.load_page(page)
    rect = pg.rect
    zoom = width / rect.width if rect.width else 1.0
    pix = pg.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        pix.save(str(tmp), output="png")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
