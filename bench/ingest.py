"""Ingest throughput: pages/s for born-digital PDFs and for OCR'd pages, time per step.

Runs the real pipeline (validate → store → extract → metadata → embed → save →
preview) on the dev corpus, then on image-only copies of a few corpus pages
(what a scanner produces), each in a fresh data folder. Baseline in the same run:
bare PyMuPDF text extraction of the same files, to show what the pipeline adds.

    .venv/bin/python bench/ingest.py [--ocr-pages 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pymupdf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import CORPUS, make_scanned_pdf, make_settings  # noqa: E402

from refserver.context import AppContext  # noqa: E402
from refserver.ingest.intake import stage_path, submit  # noqa: E402


def run(files: list[Path], data: Path) -> tuple[float, int, dict[str, float]]:
    ctx = AppContext(make_settings(data, ocr_dpi=200))
    ctx.embedder()  # load the model outside the timing
    pages = 0
    t0 = time.perf_counter()
    for f in files:
        sub = submit(ctx, stage_path(ctx, f), enqueue=False)
        ctx.pipeline.run_job(sub.job_id)
        job = ctx.jobs.get(sub.job_id)
        assert job is not None and job.status == "completed", job and job.error_message
        pages += int(job.result_summary.get("pages", 0))
    elapsed = time.perf_counter() - t0
    timings = dict(ctx.pipeline.timings)
    ctx.close()
    return elapsed, pages, timings


def shares(timings: dict[str, float]) -> str:
    total = sum(timings.values()) or 1.0
    return ", ".join(
        f"{k} {v / total:.0%}" for k, v in sorted(timings.items(), key=lambda kv: -kv[1])
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ocr-pages", type=int, default=6)
    args = ap.parse_args()
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    files = [CORPUS / e["file"] for e in manifest]
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        t0 = time.perf_counter()
        base_pages = 0
        for f in files:
            with pymupdf.open(f) as d:
                for p in d:
                    p.get_text()
                    base_pages += 1
        base = time.perf_counter() - t0

        el, pages, timings = run(files, tmpd / "text")
        print(
            f"born-digital corpus: {len(files)} files, {pages} pages in {el:.1f} s "
            f"= {pages / el:.1f} pages/s ({len(files) / el:.2f} files/s)"
        )
        print(f"  baseline (PyMuPDF get_text only, same files): {base_pages / base:.0f} pages/s")
        print(f"  time per step: {shares(timings)}")

        scans = []
        for i, f in enumerate(files[: args.ocr_pages]):
            scans.append(make_scanned_pdf(f, tmpd / f"scan{i}.pdf", page=0, dpi=200))
        el, pages, timings = run(scans, tmpd / "ocr")
        print(
            f"scanned (image-only) pages: {pages} pages in {el:.1f} s = {pages / el:.2f} pages/s "
            f"({el / max(pages, 1):.2f} s/page)"
        )
        print(f"  time per step: {shares(timings)}")


if __name__ == "__main__":
    main()
