"""Shared fixtures: real SQLite, real ChromaDB and real PDFs in a temporary data folder."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from fastapi.testclient import TestClient

from refserver.config import Settings

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "corpus"
ADMIN_PASSWORD = "test-admin-password"


def corpus_manifest() -> list[dict[str, Any]]:
    return json.loads((CORPUS / "manifest.json").read_text())


def corpus_pdf(name: str) -> Path:
    """A corpus file by a fragment of its name, e.g. ``corpus_pdf("jacow")``."""
    hits = sorted((CORPUS / "pdfs").glob(f"*{name}*.pdf"))
    assert hits, f"no corpus file matching {name}"
    return hits[0]


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_user": "admin",
        "admin_password": ADMIN_PASSWORD,
        "scheduler_enabled": False,
        "workers": 1,
        "ocr_dpi": 150,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Any]:
    from refserver.context import AppContext

    context = AppContext(settings)
    try:
        yield context
    finally:
        context.close()


def login(
    client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD
) -> dict[str, str]:
    r = client.post("/api/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from refserver.api.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def auth(client: TestClient) -> dict[str, str]:
    return login(client)


def wait_job(
    client: TestClient, job_id: str, headers: dict[str, str], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/job/{job_id}", headers=headers).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def ingest_pdf(ctx: Any, path: Path) -> str:
    """Ingest one PDF through the real pipeline (validate, extract, embed, store)."""
    from refserver.ingest.intake import stage_path, submit

    sub = submit(ctx, stage_path(ctx, path), enqueue=False)
    ctx.pipeline.run_job(sub.job_id)
    job = ctx.jobs.get(sub.job_id)
    assert job.status == "completed", job.error_message
    return job.paper_id


def make_text_pdf(path: Path, pages: list[str], *, title: str | None = None) -> Path:
    """A born-digital PDF with the given page texts (PyMuPDF)."""
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page()
        page.insert_textbox(pymupdf.Rect(72, 72, 540, 770), text, fontsize=11)
    if title:
        doc.set_metadata({"title": title})
    doc.save(path)
    doc.close()
    return path


def make_scanned_pdf(src: Path, dest: Path, page: int = 0, dpi: int = 150) -> Path:
    """An image-only PDF of one page of ``src``: what a scanner would produce."""
    with pymupdf.open(src) as doc:
        pix = doc[page].get_pixmap(dpi=dpi)
        rect = doc[page].rect
    out = pymupdf.open()
    p = out.new_page(width=rect.width, height=rect.height)
    p.insert_image(rect, pixmap=pix)
    out.save(dest)
    out.close()
    return dest


@pytest.fixture(scope="session")
def corpus_library(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, dict, dict]]:
    """Every corpus PDF uploaded through the API once, for read-only tests.

    Yields (client, auth headers, {corpus file name: job record}). Tests using it
    must not change the library.
    """
    from refserver.api.app import create_app

    settings = make_settings(tmp_path_factory.mktemp("corpus") / "data", workers=2)
    with TestClient(create_app(settings)) as c:
        headers = login(c)
        jobs: dict[str, str] = {}
        for entry in corpus_manifest():
            path = CORPUS / entry["file"]
            r = c.post(
                "/upload",
                headers=headers,
                files={"file": (path.name, path.read_bytes(), "application/pdf")},
            )
            assert r.status_code == 200, r.text
            jobs[entry["file"]] = r.json()["job_id"]
        done = {name: wait_job(c, job_id, headers, timeout=600) for name, job_id in jobs.items()}
        yield c, headers, done
