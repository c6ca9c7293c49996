"""Consume folder (partial-file safety, failures filed with reasons) and the batch API."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from refserver.ingest.watch import ConsumeFolder
from refserver.storage.models import Paper
from tests.bulk.synth import make_paper_pdf
from tests.conftest import corpus_pdf, wait_job


def _papers(ctx: Any) -> list[Paper]:
    with ctx.db.read() as s:
        return list(s.execute(select(Paper)).scalars())


def test_partial_file_is_not_imported_until_complete(ctx: Any, tmp_path: Path) -> None:
    full = make_paper_pdf(tmp_path / "src.pdf", 42, pages=2, words_per_page=120).read_bytes()
    watcher = ConsumeFolder(ctx, interval=0.05)
    target = watcher.folder / "slow.pdf"
    watcher.folder.mkdir(parents=True, exist_ok=True)
    target.write_bytes(full[: len(full) * 6 // 10])  # the writer paused mid-file
    for _ in range(4):  # stable size, but no trailer yet: never taken
        assert watcher.poll_once() == []
    assert target.exists() and not _papers(ctx)
    with target.open("ab") as fh:
        fh.write(full[len(full) * 6 // 10 :])
    assert watcher.poll_once() == []  # just changed: not stable yet
    filed = watcher.poll_once()
    assert [f["outcome"] for f in filed] == ["done"]
    assert not target.exists()
    assert (watcher.folder / "done" / "slow.pdf").read_bytes() == full
    papers = _papers(ctx)
    assert len(papers) == 1 and papers[0].file_sha256 == hashlib.sha256(full).hexdigest()


def test_live_watcher_with_a_slow_writer(ctx: Any, tmp_path: Path) -> None:
    full = make_paper_pdf(tmp_path / "src.pdf", 43, pages=3, words_per_page=200).read_bytes()
    watcher = ConsumeFolder(ctx, interval=0.05)
    watcher.folder.mkdir(parents=True, exist_ok=True)
    target = watcher.folder / "incoming.pdf"
    moved_early = threading.Event()

    def slow_writer() -> None:
        with target.open("wb") as fh:
            for i in range(0, len(full), 2048):
                fh.write(full[i : i + 2048])
                fh.flush()
                if not target.exists():
                    moved_early.set()
                time.sleep(0.12 if i < len(full) // 2 else 0.01)  # long pauses first

    watcher.start()
    try:
        w = threading.Thread(target=slow_writer)
        w.start()
        w.join()
        deadline = time.monotonic() + 60
        while not (watcher.folder / "done" / "incoming.pdf").exists():
            assert time.monotonic() < deadline, watcher.processed
            time.sleep(0.05)
    finally:
        watcher.stop()
    assert not moved_early.is_set()
    papers = _papers(ctx)
    assert len(papers) == 1 and papers[0].file_sha256 == hashlib.sha256(full).hexdigest()


def test_non_pdf_and_broken_pdf_go_to_failed_with_reason(ctx: Any) -> None:
    watcher = ConsumeFolder(ctx, interval=0.05)
    watcher.folder.mkdir(parents=True, exist_ok=True)
    (watcher.folder / "notes.txt").write_text("just some notes")
    (watcher.folder / "broken.pdf").write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 200 + b"\n%%EOF\n")
    (watcher.folder / "download.pdf.part").write_bytes(b"%PDF-1.7 partial")
    watcher.poll_once()
    filed = {f["file"]: f for f in watcher.poll_once()}
    assert set(filed) == {"notes.txt", "broken.pdf"}
    failed = watcher.folder / "failed"
    assert "not a PDF" in (failed / "notes.txt.reason.txt").read_text()
    assert (failed / "broken.pdf").exists()
    assert "damaged" in (failed / "broken.pdf.reason.txt").read_text().lower()
    assert (watcher.folder / "download.pdf.part").exists()  # partial downloads are left alone
    assert not _papers(ctx)


def test_batch_upload_and_status(client: TestClient, auth: dict[str, str], tmp_path: Path) -> None:
    a = make_paper_pdf(tmp_path / "a.pdf", 61, pages=2, words_per_page=100).read_bytes()
    b = make_paper_pdf(tmp_path / "b.pdf", 62, pages=3, words_per_page=100).read_bytes()
    files = [
        ("files", ("a.pdf", a, "application/pdf")),
        ("files", ("b.pdf", b, "application/pdf")),
        ("files", ("notes.txt", b"plain text", "text/plain")),
    ]
    assert client.post("/upload/batch", files=files).status_code == 401
    r = client.post("/upload/batch", files=files, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3 and len(body["jobs"]) == 3
    assert [j["filename"] for j in body["jobs"]] == ["a.pdf", "b.pdf", "notes.txt"]
    assert body["jobs"][2]["status"] == "failed"
    for j in body["jobs"][:2]:
        assert wait_job(client, j["job_id"], auth)["status"] == "completed"

    st = client.get(f"/batch/{body['batch_id']}").json()
    assert st["total"] == 3 and st["done"] and st["remaining"] == 0
    assert st["counts"]["completed"] == 2 and st["counts"]["failed"] == 1
    assert st["pages"] == 5 and st["files_per_s"] > 0 and st["pages_per_s"] > 0
    assert st["eta_seconds"] == 0
    per_file = {f["filename"]: f for f in st["files"]}
    assert per_file["notes.txt"]["error_message"]
    assert per_file["a.pdf"]["paper_id"]
    assert client.get("/batch/batch-nope").status_code == 404


def test_batch_uploads_go_through_the_sandbox_and_the_rate_limit(client, auth) -> None:
    from tests.security.hostile import javascript

    good = corpus_pdf("jacow").read_bytes()
    files = [
        ("files", ("good.pdf", good, "application/pdf")),
        ("files", ("js.pdf", javascript(), "application/pdf")),
    ]
    r = client.post("/upload/batch", files=files, headers=auth)
    assert r.status_code == 200, r.text
    by_name = {j["filename"]: j for j in r.json()["jobs"]}
    assert by_name["js.pdf"]["status"] == "failed"
    assert "javascript" in by_name["js.pdf"]["message"].lower()
    assert by_name["good.pdf"]["status"] in ("queued", "completed")
    # Each file of a batch counts against the per-user upload limit.
    limit = client.app.state.rate_limits.config
    many = [("files", (f"f{i}.pdf", b"%PDF-", "application/pdf")) for i in range(200)]
    r = client.post("/upload/batch", files=many, headers=auth)
    assert r.status_code == 429 and "Retry-After" in r.headers, limit
