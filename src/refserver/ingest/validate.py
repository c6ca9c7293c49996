"""Reject uploads that are not usable PDFs before anything is stored.

Every check turns bad input into a ``PdfRejected`` with a reason a user can act
on (shown as a 400), so callers never have to catch PyMuPDF's own exceptions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pymupdf

__all__ = ["PdfRejected", "validate_pdf"]

log = logging.getLogger(__name__)

# PDF readers accept the header anywhere in the first 1024 bytes (some
# generators prepend junk), so we do the same.
_HEADER_WINDOW = 1024
# A complete file ends with %%EOF (some writers add a little junk after it).
_TAIL_WINDOW = 8192


class PdfRejected(Exception):
    """The file cannot be ingested; ``reason`` is for the user, ``code`` for programs."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __repr__(self) -> str:
        return f"PdfRejected(code={self.code!r}, reason={self.reason!r})"


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def validate_pdf(path: Path, *, max_bytes: int, max_pages: int) -> int:
    """Check that ``path`` is a readable, unencrypted PDF within limits; return its page count.

    Raises ``PdfRejected`` (and nothing else) for any bad input.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PdfRejected("The uploaded file could not be read.", "unreadable") from exc
    if size == 0:
        raise PdfRejected("The uploaded file is empty.", "empty")
    if size > max_bytes:
        raise PdfRejected(
            f"The file is {_mib(size)}; the limit is {_mib(max_bytes)}.",
            "too_large",
        )
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEADER_WINDOW)
            fh.seek(max(0, size - _TAIL_WINDOW))
            tail = fh.read()
    except OSError as exc:
        raise PdfRejected("The uploaded file could not be read.", "unreadable") from exc
    if b"%PDF-" not in head:
        raise PdfRejected("The file is not a PDF (no %PDF- header).", "not_pdf")

    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # MuPDF raises several types for broken files
        raise PdfRejected("The PDF is damaged and cannot be opened.", "damaged") from exc
    try:
        if doc.needs_pass or doc.is_encrypted:
            raise PdfRejected(
                "The PDF is password-protected; upload an unprotected copy.", "encrypted"
            )
        try:
            pages = doc.page_count
        except Exception as exc:
            raise PdfRejected(
                "The PDF is damaged: its page tree is unreadable.", "damaged"
            ) from exc
        if pages <= 0:
            raise PdfRejected("The PDF has no pages.", "empty")
        if pages > max_pages:
            raise PdfRejected(
                f"The PDF has {pages} pages; the limit is {max_pages}.", "too_many_pages"
            )
        # Truncated files often open (MuPDF rebuilds the xref from the objects it
        # finds) but have lost their end: pages, fonts or images are missing.
        if doc.is_repaired and b"%%EOF" not in tail:
            raise PdfRejected(
                "The PDF is incomplete (truncated, e.g. an interrupted upload or download).",
                "damaged",
            )
        for index in sorted({0, pages - 1}):
            try:
                doc.load_page(index).get_text("text")
            except Exception as exc:
                raise PdfRejected(
                    f"The PDF is damaged: page {index + 1} cannot be read.", "damaged"
                ) from exc
        return pages
    except PdfRejected:
        raise
    except Exception as exc:  # defensive: nothing but PdfRejected may escape
        log.warning("unexpected error validating %s: %r", path, exc)
        raise PdfRejected("The PDF is damaged and cannot be read.", "damaged") from exc
    finally:
        doc.close()
