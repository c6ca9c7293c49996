"""Uploading, jobs and bad input over the HTTP API, against real stores."""

from __future__ import annotations

from pathlib import Path

import pymupdf
from fastapi.testclient import TestClient

from tests.conftest import corpus_pdf, make_scanned_pdf, make_text_pdf, wait_job


def test_health_and_status(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    s = client.get("/status").json()
    for key in (
        "database",
        "metadata_extraction",
        "quality_assessment",
        "layout_analysis",
        "backup_system",
        "consistency_check",
        "version",
        "uptime",
        "deployment_mode",
    ):
        assert key in s
    assert s["database"] is True and s["deployment_mode"] == "embedded"


def test_upload_requires_a_signed_in_editor(client: TestClient) -> None:
    pdf = corpus_pdf("jacow").read_bytes()
    r = client.post("/upload", files={"file": ("a.pdf", pdf, "application/pdf")})
    assert r.status_code == 401


def test_bad_uploads_get_clear_errors_and_store_nothing(
    client: TestClient, auth: dict, tmp_path: Path
) -> None:
    assert client.post("/upload", headers=auth).status_code == 422
    r = client.post(
        "/upload", headers=auth, files={"file": ("x.pdf", b"hello, not a pdf", "application/pdf")}
    )
    assert r.status_code == 400 and "PDF" in r.json()["detail"]
    truncated = corpus_pdf("jacow").read_bytes()[:3000]
    r = client.post(
        "/upload", headers=auth, files={"file": ("t.pdf", truncated, "application/pdf")}
    )
    assert r.status_code == 400
    enc = tmp_path / "enc.pdf"
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    doc.save(enc, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")
    r = client.post(
        "/upload", headers=auth, files={"file": ("e.pdf", enc.read_bytes(), "application/pdf")}
    )
    assert r.status_code == 400 and "password" in r.json()["detail"].lower()
    stats = client.get("/stats", headers=auth).json()
    assert stats["total_papers"] == 0
    staging = list((client.app.state.ctx.settings.staging_dir).iterdir())
    assert staging == []
    assert client.get("/health").json()["status"] == "healthy"


def test_upload_job_lifecycle_and_same_file_returns_same_paper(
    client: TestClient, auth: dict
) -> None:
    pdf = corpus_pdf("jacow").read_bytes()
    r = client.post(
        "/upload", headers=auth, files={"file": ("wepml008.pdf", pdf, "application/pdf")}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (
        set(body) >= {"job_id", "filename", "status", "message"}
        and body["filename"] == "wepml008.pdf"
    )
    job = wait_job(client, body["job_id"], auth)
    assert job["status"] == "completed", job
    assert job["steps_failed"] == [] and job["progress_percentage"] == 100.0
    assert job["steps_completed"] == [
        "validate",
        "store_file",
        "extract_text",
        "metadata",
        "embeddings",
        "save",
        "preview",
    ]
    doc_id = job["paper_id"]
    again = client.post(
        "/upload", headers=auth, files={"file": ("copy.pdf", pdf, "application/pdf")}
    ).json()
    assert again["status"] == "completed" and again["paper_id"] == doc_id
    assert client.get("/stats", headers=auth).json()["total_papers"] == 1
    files = list(client.app.state.ctx.files.iter_files())
    assert len(files) == 1


def test_unknown_ids_are_404_with_detail(client: TestClient, auth: dict) -> None:
    for url in (
        "/job/nope",
        "/paper/nope",
        "/metadata/nope",
        "/embedding/nope",
        "/text/nope",
        "/preview/nope",
        "/download/nope",
        "/layout/nope",
        "/no/such/route",
    ):
        r = client.get(url, headers=auth)
        assert r.status_code == 404, url
        assert "detail" in r.json()


def test_process_is_synchronous(client: TestClient, auth: dict, tmp_path: Path) -> None:
    pdf = make_text_pdf(
        tmp_path / "s.pdf", ["A study of synthetic gravitational lenses. " * 30, "Results. " * 50]
    )
    r = client.post(
        "/process", headers=auth, files={"file": ("s.pdf", pdf.read_bytes(), "application/pdf")}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["doc_id"]
    assert isinstance(body["warnings"], list) and body["steps_failed"] == []
    assert body["processing_time"] > 0


def test_scanned_page_is_ocred(client: TestClient, auth: dict, tmp_path: Path) -> None:
    scanned = make_scanned_pdf(corpus_pdf("jner"), tmp_path / "scan.pdf", page=0, dpi=200)
    with pymupdf.open(scanned) as d:
        assert d[0].get_text().strip() == ""  # truly image-only
    r = client.post(
        "/process",
        headers=auth,
        files={"file": ("scan.pdf", scanned.read_bytes(), "application/pdf")},
    )
    body = r.json()
    assert body["success"], body
    text = client.get(f"/text/{body['doc_id']}", headers=auth).json()
    assert text["pages"][0]["source"] == "ocr"
    words = text["text"].lower()
    assert "stimulation" in words and "electrical" in words


def test_cancel_a_queued_job(settings, tmp_path: Path) -> None:
    from refserver.api.app import create_app
    from tests.conftest import login

    with TestClient(create_app(settings, start_workers=False)) as c:
        h = login(c)
        r = c.post(
            "/upload",
            headers=h,
            files={"file": ("j.pdf", corpus_pdf("jacow").read_bytes(), "application/pdf")},
        )
        job_id = r.json()["job_id"]
        assert c.get(f"/job/{job_id}", headers=h).json()["status"] == "queued"
        r = c.post(f"/queue/cancel/{job_id}", headers=h)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert c.post("/queue/cancel/unknown", headers=h).status_code == 404
        q = c.get("/queue/status", headers=h).json()
        assert q["cancelled"] == 1


def test_unfinished_jobs_resume_after_restart(settings) -> None:
    """A job queued (or running) when the server stopped completes after the next start."""
    from refserver.api.app import create_app
    from tests.conftest import login

    with TestClient(create_app(settings, start_workers=False)) as c:
        h = login(c)
        r = c.post(
            "/upload",
            headers=h,
            files={"file": ("j.pdf", corpus_pdf("jacow").read_bytes(), "application/pdf")},
        )
        job_id = r.json()["job_id"]
        # Simulate a crash mid-step: the record says processing.
        c.app.state.ctx.jobs.update(job_id, status="processing", current_step="extract_text")
    with TestClient(create_app(settings)) as c:
        h = login(c)
        job = wait_job(c, job_id, h)
        assert job["status"] == "completed" and job["paper_id"]
        assert c.get("/stats", headers=h).json()["total_papers"] == 1


def test_start_sweeps_stray_staged_copies_but_keeps_queued_ones(settings) -> None:
    from refserver.api.app import create_app
    from tests.conftest import login

    with TestClient(create_app(settings, start_workers=False)) as c:
        h = login(c)
        r = c.post(
            "/upload",
            headers=h,
            files={"file": ("j.pdf", corpus_pdf("jacow").read_bytes(), "application/pdf")},
        )
        queued = c.app.state.ctx.jobs.get(r.json()["job_id"]).staged_path
    stray = settings.staging_dir / "0123456789abcdef0123456789abcdef.pdf"
    stray.write_bytes(b"%PDF-1.7 left by a crash between staging and its job")
    with TestClient(create_app(settings, start_workers=False)):
        assert not stray.exists()
        assert Path(queued).exists()
