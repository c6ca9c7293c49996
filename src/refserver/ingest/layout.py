"""Coarse page layout (text, headings, images, tables) for display and debugging.

Headings are told apart from body text by font size and weight relative to the
page's dominant (body) size, which works across publishers without knowing
their styles. Table detection is the slow part (0.05-0.4 s/page measured), so
it is guarded against very complex vector pages and any error.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pymupdf

from .extract import TEXT_FLAGS, clean_text

__all__ = ["page_layout"]

log = logging.getLogger(__name__)

if hasattr(pymupdf, "no_recommend_layout"):
    pymupdf.no_recommend_layout()  # find_tables otherwise prints an advert to stdout

_BOLD = 16  # span flag bit


def _body_size(blocks: list[dict[str, Any]]) -> float:
    """Most common font size weighted by characters (the body text size)."""
    sizes: Counter[float] = Counter()
    for b in blocks:
        for line in b.get("lines", ()):
            for s in line["spans"]:
                n = len(s["text"].strip())
                if n:
                    sizes[round(s["size"], 1)] += n
    return sizes.most_common(1)[0][0] if sizes else 10.0


def _line_style(line: dict[str, Any]) -> tuple[float, bool]:
    sizes: Counter[float] = Counter()
    bold = chars = 0
    for s in line["spans"]:
        n = len(s["text"].strip())
        chars += n
        sizes[round(s["size"], 1)] += n
        if s["flags"] & _BOLD or "bold" in s["font"].lower():
            bold += n
    return (sizes.most_common(1)[0][0] if sizes else 0.0), chars > 0 and bold / chars > 0.6


def _split_block(block: dict[str, Any]) -> list[tuple[list[float], float, bool, str, int]]:
    """Split a text block where the font style changes (a label above a title, a
    heading run into its paragraph); return (bbox, size, bold, text, n_lines) parts."""
    parts: list[tuple[list[float], float, bool, list[str]]] = []
    for line in block.get("lines", ()):
        text = "".join(s["text"] for s in line["spans"])
        if not text.strip():
            continue
        size, bold = _line_style(line)
        bb = list(line["bbox"])
        if parts:
            pbb, psize, pbold, ptexts = parts[-1]
            if abs(psize - size) <= 0.15 * max(psize, size) and pbold == bold:
                pbb[:] = [
                    min(pbb[0], bb[0]),
                    min(pbb[1], bb[1]),
                    max(pbb[2], bb[2]),
                    max(pbb[3], bb[3]),
                ]
                ptexts.append(text)
                continue
        parts.append((bb, size, bold, [text]))
    return [(bb, size, bold, "\n".join(t), len(t)) for bb, size, bold, t in parts]


def _inside(inner: tuple[float, ...], outer: tuple[float, ...], tol: float = 2.0) -> bool:
    return (
        inner[0] >= outer[0] - tol
        and inner[1] >= outer[1] - tol
        and inner[2] <= outer[2] + tol
        and inner[3] <= outer[3] + tol
    )


def _tables(page: pymupdf.Page, max_paths: int) -> list[dict[str, Any]]:
    try:
        if len(page.get_cdrawings()) > max_paths:
            log.info("page %d: too many vector paths, table detection skipped", page.number + 1)
            return []
        found = page.find_tables()
    except Exception as exc:  # table detection is heuristic code: never fatal
        log.warning("table detection failed on page %d: %r", page.number + 1, exc)
        return []
    out = []
    for tab in found.tables:
        try:
            rows = tab.extract()
        except Exception:
            rows = []
        text = "\n".join(" | ".join((c or "").replace("\n", " ") for c in row) for row in rows)
        out.append(
            {
                "type": "table",
                "bbox": [round(v, 2) for v in tab.bbox],
                "text": text,
                "font_size": 0.0,
            }
        )
    return out


def page_layout(page: pymupdf.Page, *, tables: bool = True, max_paths: int = 5000) -> dict:
    """Describe a page as blocks: text / heading / image / table with bbox, text and size.

    ``max_paths`` skips table detection on pages with more vector paths than
    that (plots drawn as thousands of paths make it slow and find no tables).
    """
    info = page.get_text("dict", flags=TEXT_FLAGS)
    raw_blocks = info.get("blocks", [])
    body = _body_size(raw_blocks)
    table_blocks = _tables(page, max_paths) if tables else []
    blocks: list[dict[str, Any]] = []
    try:  # image placements without decoding image data
        images = page.get_image_info()
    except Exception:
        images = []
    for img in images:
        bbox = [round(v, 2) for v in img["bbox"]]
        if bbox[2] - bbox[0] >= 2 and bbox[3] - bbox[1] >= 2:
            blocks.append({"type": "image", "bbox": bbox, "text": "", "font_size": 0.0})
    for b in raw_blocks:
        if b.get("type") != 0:
            continue
        if any(_inside(b["bbox"], t["bbox"]) for t in table_blocks):
            continue  # its text is reported by the table block
        for part_bbox, size, bold, raw, n_lines in _split_block(b):
            text = clean_text(raw)
            if not text:
                continue
            words = len(text.split())
            heading = (
                words <= 30
                and n_lines <= 4
                and (size >= body * 1.15 or (bold and size >= body * 0.95 and words <= 15))
            )
            blocks.append(
                {
                    "type": "heading" if heading else "text",
                    "bbox": [round(v, 2) for v in part_bbox],
                    "text": text,
                    "font_size": round(size, 2),
                }
            )
    blocks.extend(table_blocks)
    blocks.sort(key=lambda blk: (blk["bbox"][1], blk["bbox"][0]))
    return {
        "page": page.number + 1,
        "width": round(page.rect.width, 2),
        "height": round(page.rect.height, 2),
        "blocks": blocks,
    }
