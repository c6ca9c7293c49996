"""OCR of single pages through PyMuPDF's built-in Tesseract.

PyMuPDF links Tesseract itself but needs the language data folder
(``tessdata``); it is discovered once here so callers only ask whether OCR is
available and which languages it can read.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pymupdf

__all__ = [
    "OcrUnavailable",
    "tesseract_available",
    "find_tessdata",
    "available_languages",
    "ocr_textpage",
    "ocr_page",
]

log = logging.getLogger(__name__)

_TESSDATA_GLOBS = (
    "/usr/share/tesseract-ocr/*/tessdata",
    "/usr/share/tesseract-ocr/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/usr/local/share/tesseract-ocr/*/tessdata",
    "/opt/homebrew/share/tessdata",
    "/opt/local/share/tessdata",
)


class OcrUnavailable(RuntimeError):
    """Tesseract language data is missing, so pages cannot be OCR'd."""


def _has_traineddata(folder: str | os.PathLike[str]) -> bool:
    try:
        return any(p.suffix == ".traineddata" for p in Path(folder).iterdir())
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def find_tessdata() -> str | None:
    """Locate the tessdata folder: $TESSDATA_PREFIX, usual install paths, then `tesseract`."""
    env = os.environ.get("TESSDATA_PREFIX")
    if env:
        for cand in (env, os.path.join(env, "tessdata")):
            if _has_traineddata(cand):
                return cand
    for pattern in _TESSDATA_GLOBS:
        for cand in sorted(glob.glob(pattern), reverse=True):  # newest version first
            if _has_traineddata(cand):
                return cand
    exe = shutil.which("tesseract")
    if exe:
        try:
            out = subprocess.run(
                [exe, "--list-langs"], capture_output=True, text=True, timeout=10, check=False
            )
            m = re.search(r'languages in "(.+?)"', out.stdout + out.stderr)
            if m and _has_traineddata(m.group(1)):
                return m.group(1)
        except (OSError, subprocess.SubprocessError):
            pass
    return None


@functools.lru_cache(maxsize=1)
def available_languages() -> frozenset[str]:
    """Languages whose ``<lang>.traineddata`` is installed."""
    folder = find_tessdata()
    if not folder:
        return frozenset()
    return frozenset(p.stem for p in Path(folder).glob("*.traineddata"))


def tesseract_available() -> bool:
    """True when OCR can run (language data found, at least English or any language)."""
    return bool(available_languages() - {"osd"})


def _usable_languages(languages: str) -> str:
    """Keep the requested languages that are installed; fail if none is."""
    have = available_languages()
    wanted = [lang for lang in languages.split("+") if lang]
    usable = [lang for lang in wanted if lang in have]
    if not usable:
        if not have:
            raise OcrUnavailable(
                "Tesseract language data not found; install tesseract-ocr "
                "(e.g. apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor) "
                "or set TESSDATA_PREFIX."
            )
        raise OcrUnavailable(
            f"None of the OCR languages {languages!r} is installed (have: {sorted(have)})."
        )
    missing = set(wanted) - set(usable)
    if missing:
        log.warning("OCR languages not installed, skipped: %s", ", ".join(sorted(missing)))
    return "+".join(usable)


def ocr_textpage(
    page: pymupdf.Page, languages: str = "eng+kor", dpi: int = 200
) -> pymupdf.TextPage:
    """OCR the whole rendered page and return a TextPage tied to ``page``.

    The caller must keep ``page`` referenced while using the TextPage: it holds
    only a weak reference (``doc[0].get_textpage_ocr()`` then ``doc[0].get_text``
    raises ReferenceError).
    """
    langs = _usable_languages(languages)
    tessdata = find_tessdata()
    try:
        return page.get_textpage_ocr(language=langs, dpi=dpi, full=True, tessdata=tessdata)
    except Exception as exc:
        raise OcrUnavailable(f"OCR failed on page {page.number + 1}: {exc}") from exc


def ocr_page(page: pymupdf.Page, languages: str = "eng+kor", dpi: int = 200) -> str:
    """Return the OCR'd text of a page (whole page rendered at ``dpi``)."""
    tp = ocr_textpage(page, languages, dpi)
    return page.get_text("text", textpage=tp)
