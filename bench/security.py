"""Cost of the PDF sandbox, and how fast hostile files are turned away.

For each corpus PDF: ``validate_pdf`` in this process (the old intake check: page
count + first page) against ``validate_pdf_sandboxed`` (a fresh child process
with RLIMIT_AS and a time limit, checking every page). Then the time to reject
hostile files (decompression bomb, deep nesting, JavaScript, image bomb) and the
peak memory this process gained meanwhile (it must not grow: the child pays).

    .venv/bin/python bench/security.py
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.security import hostile  # noqa: E402

from refserver.ingest.sandbox import validate_pdf_sandboxed  # noqa: E402
from refserver.ingest.validate import PdfRejected, validate_pdf  # noqa: E402

LIMIT = 100 * 1024 * 1024


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    corpus = sorted((ROOT / "tests" / "data" / "corpus" / "pdfs").glob("*.pdf"))
    inproc, sandboxed, pages = [], [], 0
    for path in corpus:
        t0 = time.perf_counter()
        n = validate_pdf(path, max_bytes=LIMIT, max_pages=2000)
        inproc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert validate_pdf_sandboxed(path, LIMIT, 2000) == n
        sandboxed.append(time.perf_counter() - t0)
        pages += n
    print(f"corpus: {len(corpus)} PDFs, {pages} pages")
    print(
        f"  in-process validate_pdf: median {statistics.median(inproc) * 1000:.0f} ms, "
        f"total {sum(inproc):.2f} s"
    )
    print(
        f"  sandboxed (all pages):   median {statistics.median(sandboxed) * 1000:.0f} ms, "
        f"total {sum(sandboxed):.2f} s  (x{sum(sandboxed) / sum(inproc):.1f})"
    )
    rss_before = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "decompression bomb (1 GiB inflated)": hostile.decompression_bomb(1024),
            "deep nesting (200k arrays)": hostile.deep_nesting(),
            "image bomb (10 Gpx)": hostile.image_bomb(),
            "JavaScript action": hostile.javascript(),
        }
        for name, data in cases.items():
            path = Path(tmp) / "h.pdf"
            path.write_bytes(data)
            t0 = time.perf_counter()
            try:
                validate_pdf_sandboxed(path, LIMIT, 2000)
                outcome = "ACCEPTED"
            except PdfRejected as exc:
                outcome = exc.code
            print(
                f"  {name:38s} {outcome:16s} {(time.perf_counter() - t0) * 1000:6.0f} ms "
                f"({len(data) / 1024:.0f} KiB file)"
            )
    print(f"server-side peak RSS growth during hostile checks: {_rss_mb() - rss_before:.0f} MiB")


if __name__ == "__main__":
    main()
