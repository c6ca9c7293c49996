"""Bulk import throughput vs the one-process pipeline, measured in the same run.

Generates N paper-shaped multi-page text PDFs (PyMuPDF, varied scientific prose,
2–4 pages each) and adds the dev corpus (tests/data/corpus/pdfs). Then, each in
a fresh data folder:

* baseline: the existing sequential pipeline (stage → submit → ``run_job``, one
  file after another, as ``refserver import`` does) on every k-th generated file
  plus the corpus (a uniform sample, to keep the run short);
* bulk: ``bulk_import`` (extraction in worker processes, embeddings batched on
  threads, grouped job writes) on all generated files plus the corpus.

Prints files/s, pages/s, CPU use per core (psutil, whole machine: other load
shows too), the share of time per step and the speed-up.

    .venv/bin/python bench/bulk.py [--files 500] [--baseline-files 120] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bulk.synth import make_paper_pdf  # noqa: E402
from tests.conftest import CORPUS, make_settings  # noqa: E402

from refserver.context import AppContext  # noqa: E402
from refserver.ingest.bulk import bulk_import  # noqa: E402
from refserver.ingest.intake import stage_path, submit  # noqa: E402

OVERHEAD_STEPS = ("hash", "validate", "store_file", "extract_text", "metadata", "preview", "save")


def generate(folder: Path, n: int, seed: int = 7) -> list[Path]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        out.append(
            make_paper_pdf(
                folder / f"gen{i:04d}.pdf",
                10_000 + i,
                pages=rng.randint(2, 4),
                words_per_page=rng.randint(120, 260),
            )
        )
    return out


def shares(timings: dict[str, float]) -> dict[str, float]:
    total = sum(timings.values()) or 1.0
    return {k: round(v / total, 3) for k, v in sorted(timings.items(), key=lambda x: -x[1])}


def overhead(timings: dict[str, float]) -> float:
    total = sum(timings.values()) or 1.0
    return sum(v for k, v in timings.items() if k in OVERHEAD_STEPS) / total


class CpuMeter:
    """Average CPU use per core over a phase (whole machine), and this process tree's CPU time."""

    def __enter__(self) -> CpuMeter:
        psutil.cpu_percent(percpu=True)
        self.t0 = time.perf_counter()
        self.proc0 = self._tree_cpu()
        return self

    @staticmethod
    def _tree_cpu() -> float:
        me = psutil.Process()
        total = sum(me.cpu_times()[:2])
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += sum(child.cpu_times()[:2])
        return total

    def sample_children(self) -> None:
        """Child processes' CPU is lost when they exit: sample while they run."""
        self.proc_peak = max(getattr(self, "proc_peak", 0.0), self._tree_cpu())

    def __exit__(self, *exc: Any) -> None:
        self.per_core = psutil.cpu_percent(percpu=True)
        self.wall = time.perf_counter() - self.t0
        end = max(self._tree_cpu(), getattr(self, "proc_peak", 0.0))
        self.cores_used = (end - self.proc0) / self.wall if self.wall else 0.0


def run_baseline(files: list[Path], data: Path) -> dict[str, Any]:
    ctx = AppContext(make_settings(data, workers=1))
    per_file: dict[str, float] = {}
    try:
        ctx.embedder()  # model load outside the timing
        pages = 0
        with CpuMeter() as cpu:
            for f in files:
                t = time.perf_counter()
                sub = submit(ctx, stage_path(ctx, f), enqueue=False)
                ctx.pipeline.run_job(sub.job_id)
                job = ctx.jobs.get(sub.job_id)
                assert job is not None and job.status == "completed", job and job.error_message
                pages += int(job.result_summary.get("pages", 0))
                per_file[str(f)] = time.perf_counter() - t
        timings = dict(ctx.pipeline.timings)
    finally:
        ctx.close()
    return {
        "files": len(files),
        "pages": pages,
        "seconds": cpu.wall,
        "files_per_s": len(files) / cpu.wall,
        "pages_per_s": pages / cpu.wall,
        "cpu_per_core_pct": cpu.per_core,
        "process_cores_used": round(cpu.cores_used, 2),
        "load_avg": round(os.getloadavg()[0], 2),
        "step_share": shares(timings),
        "overhead_share": round(overhead(timings), 3),
        "per_file": per_file,
    }


def run_bulk(files: list[Path], data: Path, workers: int | None) -> dict[str, Any]:
    ctx = AppContext(make_settings(data, workers=1))
    try:
        ctx.embedder()
        from refserver.embedding.model import get_embedder

        get_embedder(1, 1)  # the bulk engine's session
        with CpuMeter() as cpu:
            last = [0.0]

            def progress(p: Any) -> None:
                now = time.monotonic()
                if now - last[0] > 1.0:
                    cpu.sample_children()
                if now - last[0] > 15.0:
                    last[0] = now
                    print(
                        f"  bulk: {p.files_done}/{p.files_total} files "
                        f"{p.files_per_s:.2f} files/s {p.pages_per_s:.1f} pages/s",
                        file=sys.stderr,
                    )

            rep = bulk_import(ctx, files, workers=workers, progress_cb=progress)
    finally:
        ctx.close()
    done = len(rep.imported) + len(rep.duplicates)
    assert not rep.failed, [(o.file, o.reason) for o in rep.failed]
    return {
        "files": done,
        "pages": rep.pages,
        "seconds": cpu.wall,
        "files_per_s": done / cpu.wall,
        "pages_per_s": rep.pages / cpu.wall,
        "cpu_per_core_pct": cpu.per_core,
        "process_cores_used": round(cpu.cores_used, 2),
        "load_avg": round(os.getloadavg()[0], 2),
        "step_seconds": {k: round(v, 2) for k, v in rep.step_seconds.items()},
        "step_share": shares(rep.step_seconds),
        "overhead_share": round(overhead(rep.step_seconds), 3),
        "workers": rep.workers,
        "embed_threads": rep.embed_threads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=500, help="generated PDFs for the bulk run")
    ap.add_argument(
        "--baseline-files", type=int, default=120, help="generated PDFs for the baseline"
    )
    ap.add_argument("--workers", type=int, default=None, help="extraction processes")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    t = time.perf_counter()
    generated = generate(tmp / "gen", args.files)
    corpus = sorted((CORPUS / "pdfs").glob("*.pdf"))
    print(
        f"generated {len(generated)} PDFs in {time.perf_counter() - t:.1f}s; "
        f"corpus {len(corpus)} PDFs; {os.cpu_count()} cores; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    step = max(1, len(generated) // max(1, args.baseline_files))
    sample = generated[::step][: args.baseline_files] + corpus

    print(f"baseline (sequential pipeline): {len(sample)} files ...", flush=True)
    base = run_baseline(sample, tmp / "data-baseline")
    print(f"bulk: {len(generated) + len(corpus)} files ...", flush=True)
    bulk = run_bulk(generated + corpus, tmp / "data-bulk", args.workers)

    def line(name: str, r: dict[str, Any]) -> None:
        cores = " ".join(f"{c:.0f}%" for c in r["cpu_per_core_pct"])
        print(
            f"{name:9s} {r['files']:5d} files {r['pages']:6d} pages {r['seconds']:7.1f}s  "
            f"{r['files_per_s']:6.2f} files/s {r['pages_per_s']:7.2f} pages/s  "
            f"CPU per core [{cores}]  this process tree {r['process_cores_used']:.2f} cores "
            f"(load avg {r['load_avg']})"
        )
        cpu_s = r["process_cores_used"] * r["seconds"]
        print(
            f"          CPU: {cpu_s:.1f} CPU-s in this process tree, "
            f"{cpu_s / max(r['pages'], 1) * 1000:.0f} CPU-ms per page"
        )
        print(f"          step share: {r['step_share']}")
        print(f"          extraction + storage overhead: {r['overhead_share']:.1%} of step time")

    print()
    line("baseline", base)
    line("bulk", bulk)
    # The baseline ran on a sample: its per-file times (generated and corpus apart)
    # give the time the one-process pipeline would need for the bulk run's files.
    per = base.pop("per_file")
    gen_times = [v for k, v in per.items() if "/gen/" in k]
    corpus_time = sum(v for k, v in per.items() if "/gen/" not in k)
    base_equiv = sum(gen_times) / len(gen_times) * len(generated) + corpus_time
    speedup = base_equiv / bulk["seconds"]
    speed_pages = bulk["pages_per_s"] / base["pages_per_s"]
    print(
        f"\nbaseline-equivalent time for the bulk run's {len(generated) + len(corpus)} files: "
        f"{base_equiv:.1f}s; bulk took {bulk['seconds']:.1f}s"
    )
    print(
        f"speed-up: {speedup:.2f}x (same files), {speed_pages:.2f}x pages/s "
        f"(target >= 1.7x on 2 cores) — workers={bulk['workers']}, "
        f"embedding threads={bulk['embed_threads']}, load average during runs: "
        f"baseline {base['load_avg']}, bulk {bulk['load_avg']}"
    )
    busy = bulk["step_seconds"].get("embeddings", 0.0) / (bulk["embed_threads"] * bulk["seconds"])
    print(
        f"embedding threads busy {busy:.0%} of the bulk run's wall time "
        "(the rest of the pipeline overlaps with them)"
    )
    speed_files = speedup
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "baseline": base,
                    "bulk": bulk,
                    "speedup_files": speed_files,
                    "speedup_pages": speed_pages,
                },  # fmt: skip
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
