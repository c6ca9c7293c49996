"""Backup engine on a ≥1 GB library: full/snapshot vs cp, incremental share, restore, writer stall.

The library is built fast, not through the pipeline: papers, pages (unique
Zipf-distributed pseudo-word text, ~like real text for compression) and vectors
(384-d float32, clustered around real model embeddings of corpus passages like
real embeddings are) are bulk-inserted through SQLAlchemy Core in the write path, the
vectors are upserted into the real ChromaDB, and each paper gets a "PDF" of random
(incompressible, like real PDF streams) bytes. Every paper is in the full-text
index, as after ingest: its metadata row in ``papers_fts`` and its text in
``paper_bodies_fts``. Baseline in the same run: ``cp -r`` of the same bytes (warm cache).

A writer thread commits one small row every 10 ms through ``db.write()`` during
every backup; the longest commit it saw is the stall.

    .venv/bin/python bench/backup.py [--papers 2000] [--pages 15] [--data /tmp/rs-bench]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import make_settings  # noqa: E402

from refserver.context import AppContext  # noqa: E402
from refserver.embedding.model import checksum, get_embedder, to_blob  # noqa: E402
from refserver.safety.backup import engine_of  # noqa: E402
from refserver.safety.chroma_probe import warm_up  # noqa: E402
from refserver.safety.restore import restore  # noqa: E402
from refserver.storage import fts  # noqa: E402
from refserver.storage.library import chroma_metadata  # noqa: E402
from refserver.storage.models import AuditEntry, Page, Paper, Vector  # noqa: E402
from refserver.storage.vectors import PAGES, PAPERS  # noqa: E402

MB = 1 << 20


def vocabulary(rng: np.random.Generator, n: int = 20000) -> np.ndarray:
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    weights = np.linspace(2.0, 0.1, len(letters))
    weights /= weights.sum()
    words = ["".join(rng.choice(letters, rng.integers(2, 11), p=weights)) for _ in range(n)]
    return np.array(words, dtype=object)


@functools.cache
def _bench_search() -> Any:
    """bench/search.py as a module: its corpus passages and vector recipe."""
    spec = importlib.util.spec_from_file_location("bench_search", ROOT / "bench" / "search.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def real_vectors(n: int = 400) -> np.ndarray:
    """Model embeddings of ``n`` dev-corpus passages: the centres library vectors lie around.

    Vectors like real embeddings (clustered), not uniform random ones: ChromaDB's
    HNSW costs (inserting, replaying its log when a copy is opened) are ~4× higher
    on uniform random vectors (STACK.md; measured here: 2.0 vs 0.45 CPU-s to open a
    30k-vector copy with 720 log entries pending).
    """
    passages, _ = _bench_search().corpus_text(n, seed=1)
    return get_embedder().embed(passages)


def build(
    ctx: AppContext,
    papers: int,
    pages: int,
    pdf_kb: int,
    centres: np.ndarray,
    start: int = 0,
    words_per_page: int = 3200,
) -> None:
    """Bulk-insert ``papers`` papers with pages, vectors, PDFs and Chroma entries."""
    rng = np.random.default_rng(start + 1)
    synth = _bench_search().synth
    vocab = vocabulary(rng)
    zipf = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    cdf = np.cumsum(zipf / zipf.sum())

    def words(n: int) -> str:
        idx = np.minimum(np.searchsorted(cdf, rng.random(n)), len(vocab) - 1)
        return " ".join(vocab[idx])

    files_root = ctx.settings.files_dir
    batch = 100
    for b0 in range(start, start + papers, batch):
        ids = list(range(b0, min(b0 + batch, start + papers)))
        paper_rows, page_rows, vec_rows, shas = [], [], [], []
        for _ in ids:
            blob = b"%PDF-1.5\n" + os.urandom(pdf_kb * 1024) + b"\n%%EOF\n"
            sha = hashlib.sha256(blob).hexdigest()
            path = files_root / sha[:2] / f"{sha}.pdf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
            shas.append((sha, len(blob)))
        with ctx.db.write() as s:
            gen = s.info["generation"]
            for i, (sha, size) in zip(ids, shas, strict=True):
                paper_rows.append(
                    {
                        "doc_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-{i}")),
                        "filename": f"paper-{i}.pdf",
                        "file_sha256": sha,
                        "file_size": size,
                        "page_count": pages,
                        "title": f"Synthetic paper {i} on " + " ".join(rng.choice(vocab, 6)),
                        "abstract": words(150),
                        "year": 1990 + i % 35,
                        "authors": [f"Author {i % 97}", f"Author {i % 89}"],
                        "generation": gen,
                    }
                )
            s.execute(insert(Paper), paper_rows)
            got = dict(
                s.execute(
                    select(Paper.doc_id, Paper.id).where(
                        Paper.doc_id.in_([r["doc_id"] for r in paper_rows])
                    )
                ).all()
            )
            for r in paper_rows:
                pid = got[r["doc_id"]]
                for n in range(1, pages + 1):
                    text = words(words_per_page)
                    page_rows.append({"paper_id": pid, "page_number": n, "text": text})
                # around real embeddings: 70% one passage + noise, 30% a blend of two
                vecs, _ = synth(centres, pages + 1, rng)
                kinds = [("paper", 0)] + [("page", k) for k in range(1, pages + 1)]
                for (kind, n), v in zip(kinds, vecs, strict=True):
                    b = to_blob(v)
                    vec_rows.append(
                        {
                            "paper_id": pid,
                            "kind": kind,
                            "page_number": n,
                            "chroma_id": r["doc_id"] if kind == "paper" else f"{r['doc_id']}:{n}",
                            "model": "all-MiniLM-L6-v2",
                            "model_revision": "bench",
                            "dimension": 384,
                            "vector": b,
                            "checksum": checksum(b),
                            "generation": gen,
                        }
                    )
            s.execute(insert(Page), page_rows)
            s.execute(insert(Vector), vec_rows)
            for paper in s.execute(select(Paper).where(Paper.id.in_(got.values()))).scalars():
                fts.index_paper(s, paper)
                fts.index_body(s, paper.id)
        with ctx.db.read() as s:
            rows = s.execute(
                select(Vector, Paper)
                .join(Paper, Paper.id == Vector.paper_id)
                .where(Paper.doc_id.in_([r["doc_id"] for r in paper_rows]))
            ).all()
        for kind, name in (("page", PAGES), ("paper", PAPERS)):
            sel = [(v, p) for v, p in rows if v.kind == kind]
            ctx.vectors.upsert(
                name,
                [v.chroma_id for v, _ in sel],
                np.vstack([np.frombuffer(v.vector, dtype="<f4") for v, _ in sel]),
                [chroma_metadata(p, v) for v, p in sel],
            )
        print(f"  built {ids[-1] + 1 - start}/{papers} papers", end="\r", flush=True)
    print()


class Writer:
    """Commits one small row every 10 ms; records the longest commit."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.stop = threading.Event()
        self.worst = 0.0
        self.commits = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            with self.ctx.db.write(bump=False) as s:
                s.add(AuditEntry(action="bench.write", detail={}))
            self.worst = max(self.worst, time.perf_counter() - t0)
            self.commits += 1
            time.sleep(0.01)

    def __enter__(self) -> Writer:
        self.thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


# ext4 without a journal (this VM's root: /sys/fs/ext4/<dev>/journal_task is
# "<none>") will not reuse an inode freed in the last 60 s — 360 s once its
# inode-table block is dirty again — and skips each such inode with a buffer-cache
# lookup on every file it creates: after the bench deleted a few thousand files,
# creating as many cost ~4x the kernel CPU (cp -r of the PDFs: 1.3-2.1 vs 0.4-0.5
# CPU-s, measured). A serving library does not delete thousands of files minutes
# before its nightly backup, so the bench defers its own deletions to the end of a
# run and, when an earlier run's deletions are that recent, waits them out first.
DELETE_WINDOW_S = 370


# The window belongs to the file system, not to one bench folder: one stamp for
# every run under the temporary folder (``--data`` elsewhere adds its own).
SHARED_STAMP = Path(tempfile.gettempdir()) / "refserver-bench-last-deletion"


class Trash:
    """Deletions deferred to the end of the run (renamed aside at once)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "trash"
        self.stamp = root / "last-deletion"
        self.stamps = (self.stamp, SHARED_STAMP)
        self.n = 0

    def discard(self, path: Path) -> None:
        if path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            self.n += 1
            path.rename(self.dir / f"{self.n}-{uuid.uuid4().hex[:6]}")

    def empty(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
            self.stamp.parent.mkdir(parents=True, exist_ok=True)
            for stamp in self.stamps:
                stamp.write_text(str(time.time()))

    def wait_out(self) -> float:
        """Sleep until the last deletion is outside ext4's no-journal reuse window."""
        last = max((float(p.read_text()) for p in self.stamps if p.exists()), default=None)
        if last is None:
            return 0.0
        left = last + DELETE_WINDOW_S - time.time()
        if left > 0:
            print(f"waiting {left:.0f} s: files deleted {DELETE_WINDOW_S - left:.0f} s ago")
            time.sleep(left)
        return max(left, 0.0)


def settle(library: list[Path]) -> None:
    """Start each measurement from a settled disk with the library in the page cache.

    The build, ``--reuse``'s renames and the ``cp`` baseline leave gigabytes of
    writeback and (this disk is mounted with ``discard``) trims behind: ``sync`` and a
    pause. And this VM runs DAMON with the ``pageout`` action, which evicts pages left
    alone for a while: a library untouched for an hour was read back from the virtual
    disk (``cp`` of the 0.9 GB database 2.3 s instead of 0.24 s), so every step, the
    ``cp`` baseline too, starts after one read of the library's files.
    """
    subprocess.run(["sync"], check=True)
    time.sleep(5)
    buf = bytearray(4 << 20)
    for root in library:
        files = [root] if root.is_file() else sorted(x for x in root.rglob("*") if x.is_file())
        for path in files:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def cpu_seconds() -> float:
    """Busy CPU time of the whole machine (/proc/stat): the backup is CPU-bound on 2
    cores, and its Chroma check runs in a process that is not this one's child."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]  # not steal
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--papers", type=int, default=2000)
    ap.add_argument("--pages", type=int, default=15)
    ap.add_argument("--pdf-kb", type=int, default=250)
    ap.add_argument(
        "--words-per-page",
        type=int,
        default=3200,
        help="3200 (default) makes a text-heavy library, the backup's hard case; the "
        "dev corpus has a median of 584 words and 103 KB of PDF per page.",
    )
    ap.add_argument("--data", type=Path, default=Path("/tmp/refserver-bench-backup"))
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="Keep a library built by an earlier run (drop its backups).",
    )
    ap.add_argument(
        "--level", type=int, default=None, help="REFSERVER_BACKUP_COMPRESSION_LEVEL to use."
    )
    ap.add_argument(
        "--compact",
        choices=("when-needed", "always"),
        default="when-needed",
        help="Merge the full-text index down before the full as the server does "
        "(when over 5%% of it lies outside its main segment), or always.",
    )
    ap.add_argument(
        "--more-incrementals",
        type=int,
        default=0,
        help="Then take this many small incrementals, reporting the writer's stalls.",
    )
    args = ap.parse_args()
    settings = make_settings(args.data / "data", backup_compression_level=args.level)
    reuse = args.reuse and settings.sqlite_path.exists()
    trash = Trash(args.data)
    trash.empty()  # what an interrupted run left
    if reuse:
        trash.discard(settings.backups_dir)
        trash.discard(settings.restore_dir)
    else:
        for child in args.data.glob("*"):
            if child not in (trash.dir, trash.stamp):
                trash.discard(child)
        trash.empty()
    ctx = AppContext(settings)
    res: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        if reuse:
            with ctx.db.read() as s:
                args.papers = s.query(Paper).count()
        else:
            build(ctx, args.papers, args.pages, args.pdf_kb, real_vectors(), 0, args.words_per_page)
        with ctx.db.engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        res["build_s"] = round(time.perf_counter() - t0, 1)
        res["waited_for_deletions_s"] = round(trash.wait_out())
        library = [settings.sqlite_path, settings.files_dir, settings.chroma_path]
        settle(library)
        db_b = settings.sqlite_path.stat().st_size
        files_b = du(settings.files_dir)
        chroma_b = du(settings.chroma_path)
        total = db_b + files_b + chroma_b
        res["library"] = {
            "papers": args.papers,
            "pages": args.papers * args.pages,
            "words_per_page": args.words_per_page,
            "vectors": args.papers * (args.pages + 1),
            "sqlite_mb": round(db_b / MB),
            "pdf_mb": round(files_b / MB),
            "chroma_mb": round(chroma_b / MB),
            "total_mb": round(total / MB),
        }
        print("library", res["library"])

        scratch = args.data / "cp"
        trash.discard(scratch)
        with Writer(ctx) as cp_writer:  # the same writer, to tell the machine's stalls apart
            t0 = time.perf_counter()
            scratch.mkdir()
            for src in (settings.sqlite_path, settings.files_dir, settings.chroma_path):
                subprocess.run(["cp", "-r", str(src), str(scratch)], check=True)
            subprocess.run(["sync"], check=True)
            cp_all = time.perf_counter() - t0
        trash.discard(scratch)
        t0 = time.perf_counter()
        scratch.mkdir()
        subprocess.run(["cp", str(settings.sqlite_path), str(scratch)], check=True)
        cp_db = time.perf_counter() - t0
        trash.discard(scratch)
        res["cp"] = {
            "all_s": round(cp_all, 2),
            "db_s": round(cp_db, 2),
            "writer_worst_ms_during_cp": round(cp_writer.worst * 1000, 1),
        }

        # A serving process has its ChromaDB collections loaded (searches, ingest);
        # this fresh one loads them (and applies Chroma's pending log) here, timed
        # apart, so the backup figures are those of a running server.
        t0 = time.perf_counter()
        for name in (PAGES, PAPERS):
            ctx.vectors.count(name)
        res["chroma_first_load_s"] = round(time.perf_counter() - t0, 2)
        print("chroma first load (not part of any backup):", res["chroma_first_load_s"], "s")
        # A running server's scheduler starts the Chroma probe's fork server at
        # startup (safety.chroma_probe), so no backup pays the chromadb import.
        warm_up()
        engine = engine_of(ctx)

        def timed(label: str, **kw: Any) -> Any:
            settle(library)
            with Writer(ctx) as w:
                c = cpu_seconds()
                t = time.perf_counter()
                m = engine.create(**kw)
                dt = time.perf_counter() - t
                cpu = cpu_seconds() - c
            assert m.status == "completed", m.error
            res[label] = {
                "seconds": round(dt, 2),
                "stored_mb": round(m.size_compressed / MB, 1),
                "raw_mb": round(m.size_raw / MB, 1),
                "barrier_ms": m.barrier_ms,
                "writer_worst_ms": round(w.worst * 1000, 1),
                "writer_commits": w.commits,
                "cpu_seconds": round(cpu, 2),  # the whole machine, the writer thread too
                "timings": m.timings,
            }
            print(label, res[label])
            return m

        snap = timed("snapshot", kind="snapshot")
        res["snapshot"]["mb_per_s"] = round(db_b / MB / res["snapshot"]["seconds"])
        res["snapshot"]["vs_cp_db"] = round(res["snapshot"]["seconds"] / cp_db, 1)
        # As the scheduled full job (and `refserver backup create --type full`) does:
        # merge the full-text index into one segment first when enough of it lies
        # outside its main segment (--compact forces it), so the incrementals on
        # this full carry no FTS5 merges of the old index. Timed apart.
        settle(library)
        with Writer(ctx) as w:
            done = fts.compact(
                ctx.db, **({"min_outside_share": 0} if args.compact == "always" else {})
            )
        res["index_compact"] = {
            "policy": args.compact,
            "outside_share_before": done.outside_share,
            "skipped": done.skipped,
            "seconds": done.seconds,
            "transactions": done.transactions,
            "worst_transaction_ms": done.worst_ms,
            "writer_worst_ms": round(w.worst * 1000, 1),
        }
        print("index_compact", res["index_compact"])
        full = timed("full", kind="full", unified=True)
        res["full"]["mb_per_s"] = round(total / MB / res["full"]["seconds"])
        res["full"]["mb_per_s_with_compaction"] = round(
            total / MB / (res["full"]["seconds"] + done.seconds)
        )
        res["full"]["vs_cp_all"] = round(res["full"]["seconds"] / cp_all, 1)
        del snap

        # 1% of the papers change: as many new papers, and 1% of titles edited.
        n = max(1, args.papers // 100)
        build(ctx, n, args.pages, args.pdf_kb, real_vectors(), args.papers, args.words_per_page)
        with ctx.db.read() as s:
            ids = list(s.execute(select(Paper.doc_id).limit(n)).scalars())
        for doc_id in ids:
            ctx.library.update_metadata(doc_id, {"title": f"Edited title {doc_id}"})
        inc = timed("incremental", kind="incremental")
        res["incremental"]["share_of_full"] = round(inc.size_compressed / full.size_compressed, 4)
        res["incremental"]["changed_pages"] = inc.sqlite.get("changed_pages")
        if args.more_incrementals:
            # The writer-stall target is about the worst case: a series of small
            # incrementals (3 new papers each), each with the writer running.
            stalls: list[float] = []
            for i in range(args.more_incrementals):
                build(
                    ctx,
                    3,
                    args.pages,
                    args.pdf_kb,
                    real_vectors(),
                    args.papers + n + 3 * i,
                    args.words_per_page,
                )
                subprocess.run(["sync"], check=True)
                time.sleep(1)
                with Writer(ctx) as w:
                    inc = engine.create(kind="incremental")
                assert inc.status == "completed", inc.error
                stalls.append(round(w.worst * 1000, 1))
            stalls.sort()
            res["incremental_series"] = {
                "runs": len(stalls),
                "writer_worst_ms_median": stalls[len(stalls) // 2],
                "writer_worst_ms_max": stalls[-1],
                "over_100_ms": sum(x > 100 for x in stalls),
            }
            print("incremental series", res["incremental_series"])

        settle(library)
        t = time.perf_counter()
        out = restore(engine, inc.id, target_path="bench-check")
        dt = time.perf_counter() - t
        res["restore_to_folder"] = {
            "seconds": round(dt, 2),
            "mb_per_s": round(total / MB / dt),
            "chain": len(out["chain"]),
        }
        print("restore_to_folder", res["restore_to_folder"])
        trash.discard(settings.restore_dir / "bench-check")
        settle(library)
        t = time.perf_counter()
        out = restore(engine, inc.id, force=True)  # as after a disk loss: no safety backup
        dt = time.perf_counter() - t
        res["restore_live"] = {
            "seconds": round(dt, 2),
            "mb_per_s": round(total / MB / dt),
            "chroma_reconciled": out["chroma_reconciled"],
            "timings": out["timings"],
        }
        print("restore_live", res["restore_live"])
    finally:
        ctx.close()
        trash.empty()
    res["compression_level"] = args.level or "default (zstd 2)"
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=1))
    (args.data / "result.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
