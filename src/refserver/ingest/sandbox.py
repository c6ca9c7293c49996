"""Check an untrusted PDF in a child process with a time limit and a memory cap.

A hostile file (a decompression bomb, a content stream nested thousands of
levels deep, a page tree that loops, a gigapixel image) must not stall or
exhaust the serving process or its ingest workers. ``validate_pdf_sandboxed``
runs the ordinary ``validate_pdf`` checks plus a full pass over every page
(content streams are decoded and their text read, declared image sizes are
checked, active content is refused) in a child process whose address space is
capped with ``resource.setrlimit(RLIMIT_AS)`` and whose wall-clock time is
bounded by the parent (``RLIMIT_CPU`` is a backstop). Whatever happens in the
child comes back as a ``PdfRejected`` with a reason a user can act on.

The child is a fresh interpreter (``python -m refserver.ingest.sandbox``), not a
fork of the multi-threaded server: forking a process whose other threads hold
locks can deadlock the child, and multiprocessing's spawn/forkserver re-import
the server's ``__main__``. It prints one marked JSON line with its answer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from refserver.ingest.validate import PdfRejected, validate_pdf

__all__ = [
    "DEFAULT_MAX_CONTENT_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT",
    "inspect_pdf",
    "validate_pdf_sandboxed",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
DEFAULT_MEMORY_MB = 1024
# A 600 dpi A4 page is ~35 Mpx; far beyond that is an attack (or useless to us).
DEFAULT_MAX_IMAGE_PIXELS = 250_000_000
# At most this many checks run at once, so a burst of uploads cannot fork-bomb the host.
MAX_CONCURRENT = max(1, min(4, os.cpu_count() or 1))

# Decoded page content (content streams + form XObjects) beyond this is a bomb.
DEFAULT_MAX_CONTENT_BYTES = 256 * 1024 * 1024
# A complete PDF ends with %%EOF (a little trailing junk is common, so look at a window).
_TAIL = 4096
# Actions that run code or reach outside the document, and the document-level
# JavaScript name tree: refused at intake (a library of papers never needs them).
_ACTIVE_RE = re.compile(
    r"/S\s*/(JavaScript|Launch|ImportData|Rendition)\b|/JS\s*[(<\[0-9]|/JavaScript\s*(<<|[0-9])"
)

_MARK = "@@refserver-sandbox@@ "
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)


def _is_memory_failure(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, MemoryError):
            return True
        text = str(exc).lower()
        if "malloc" in text or "out of memory" in text or "cannot allocate" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _bomb(limit: int) -> PdfRejected:
    return PdfRejected(
        f"The PDF's page content inflates to more than {limit // (1024 * 1024)} MiB; it is "
        "a decompression bomb or far too complex.",
        "too_complex",
    )


def _check_content_size(path: Path, max_pages: int, limit: int) -> None:
    """Decode every page's content streams (whole-buffer loads) before anything streams them.

    MuPDF refuses a whole-buffer load of an extreme ratio ("compression bomb
    detected") within a second, whereas extracting text from the same stream
    streams gigabytes for many seconds. Files that do not open are left to
    ``validate_pdf`` to explain.
    """
    import pymupdf

    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception:
        return
    try:
        if doc.needs_pass or doc.is_encrypted:
            return
        try:
            count = min(doc.page_count, max_pages)
        except Exception:
            return
        total = 0
        for number in range(count):
            try:
                page = doc.load_page(number)
                xrefs = list(page.get_contents()) + [x[0] for x in page.get_xobjects()]
            except Exception:
                continue  # validate_pdf and the page pass report unreadable pages
            for xref in xrefs:
                try:
                    total += len(doc.xref_stream(xref) or b"")
                except Exception as exc:
                    if "bomb" in str(exc).lower() or _is_memory_failure(exc):
                        raise _bomb(limit) from exc
                    continue
                if total > limit:
                    raise _bomb(limit)
    finally:
        doc.close()


def _reject_active(text: str) -> None:
    if _ACTIVE_RE.search(text):
        raise PdfRejected(
            "The PDF contains JavaScript or actions that launch programs; remove them "
            "(e.g. print it to a new PDF) and upload again.",
            "active_content",
        )


def inspect_pdf(
    path: Path,
    *,
    max_bytes: int,
    max_pages: int,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
) -> int:
    """All intake checks, in this process: ``validate_pdf`` + hostile-content checks.

    Meant to run inside the sandbox child (it decodes every page's content, so
    a bomb costs memory and time here); returns the page count or raises
    ``PdfRejected``.
    """
    import pymupdf

    path = Path(path)
    if 0 < path.stat().st_size <= max_bytes:
        _check_content_size(path, max_pages, max_content_bytes)
    pages = validate_pdf(path, max_bytes=max_bytes, max_pages=max_pages)
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - _TAIL))
        if b"%%EOF" not in fh.read():
            raise PdfRejected(
                "The PDF is truncated (it has no end-of-file marker); upload the complete file.",
                "truncated",
            )
    doc = pymupdf.open(path, filetype="pdf")
    try:
        for xref in range(1, doc.xref_length()):
            try:
                text = doc.xref_object(xref, compressed=True)
            except Exception as exc:
                if "overflow" in str(exc).lower() or "nest" in str(exc).lower():
                    raise PdfRejected(
                        "The PDF nests its objects too deeply to be read safely.", "too_complex"
                    ) from exc
                continue  # an unreadable object: the page pass below decides
            _reject_active(text)
        for number in range(pages):
            try:
                page = doc.load_page(number)
                page.get_text("text")
                images = page.get_images(full=False)
            except PdfRejected:
                raise
            except Exception as exc:
                if _is_memory_failure(exc):
                    raise
                raise PdfRejected(
                    f"The PDF is damaged: page {number + 1} cannot be read.", "damaged"
                ) from exc
            for img in images:
                width, height = int(img[2] or 0), int(img[3] or 0)
                if width * height > max_image_pixels:
                    raise PdfRejected(
                        f"Page {number + 1} holds an image of {width}×{height} pixels; "
                        f"the limit is {max_image_pixels // 1_000_000} megapixels.",
                        "image_too_large",
                    )
        return pages
    finally:
        doc.close()


def _child_main(argv: list[str]) -> int:
    """Entry point of the sandbox process: cap resources, inspect, print one JSON answer."""
    args = json.loads(argv[0])
    limit = int(args["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(args["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        import pymupdf

        pymupdf.TOOLS.mupdf_display_errors(False)
        pymupdf.TOOLS.mupdf_display_warnings(False)
        pages = inspect_pdf(
            Path(args["path"]),
            max_bytes=int(args["max_bytes"]),
            max_pages=int(args["max_pages"]),
            max_image_pixels=int(args["max_image_pixels"]),
        )
        answer: dict[str, Any] = {"status": "ok", "pages": pages}
    except PdfRejected as exc:
        if _is_memory_failure(exc.__cause__):
            answer = {"status": "memory"}
        else:
            answer = {"status": "rejected", "reason": exc.reason, "code": exc.code}
    except BaseException as exc:  # MemoryError, RecursionError, MuPDF internals
        if _is_memory_failure(exc):
            answer = {"status": "memory"}
        else:
            answer = {"status": "crashed", "error": type(exc).__name__}
    sys.stdout.write(_MARK + json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


def _timeout_rejection(timeout: float) -> PdfRejected:
    return PdfRejected(
        f"Checking the PDF took longer than {timeout:g} s; it is too complex or malformed.",
        "timeout",
    )


def validate_pdf_sandboxed(
    path: Path,
    max_bytes: int,
    max_pages: int,
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    *,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> int:
    """Validate an untrusted PDF in a resource-capped child; return its page count.

    Raises ``PdfRejected`` for bad input, including ``timeout`` (the checks took
    longer than ``timeout`` seconds) and ``too_complex`` (they needed more than
    ``memory_mb`` MiB). Same contract as ``validate_pdf``. Costs ~0.15 s of
    process start on top of the checks themselves.
    """
    path = Path(path)
    args = {
        "path": str(path.resolve()),
        "max_bytes": max_bytes,
        "max_pages": max_pages,
        "max_image_pixels": max_image_pixels,
        "memory_mb": memory_mb,
        "cpu_seconds": max(1, math.ceil(timeout)),
    }
    cmd = [sys.executable, "-m", "refserver.ingest.sandbox", json.dumps(args)]
    with _slots:
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise _timeout_rejection(timeout) from None
    answer: dict[str, Any] | None = None
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith(_MARK):
            answer = json.loads(line[len(_MARK) :])
    if answer is None:
        log.warning(
            "PDF sandbox for %s died (exit %s): %s",
            path.name,
            done.returncode,
            done.stderr.decode("utf-8", "replace")[-500:],
        )
        if -done.returncode in (signal.SIGKILL, signal.SIGXCPU):
            raise _timeout_rejection(timeout)
        raise PdfRejected("The PDF is damaged and cannot be read safely.", "damaged")
    if answer["status"] == "ok":
        return int(answer["pages"])
    if answer["status"] == "rejected":
        raise PdfRejected(str(answer["reason"]), str(answer["code"]))
    if answer["status"] == "memory":
        raise PdfRejected(
            f"The PDF needs more than {memory_mb} MiB to read; it is too complex or a "
            "decompression bomb.",
            "too_complex",
        )
    log.warning("PDF sandbox for %s failed: %s", path.name, answer.get("error"))
    raise PdfRejected("The PDF is damaged and cannot be read safely.", "damaged")


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
