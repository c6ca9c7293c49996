"""POST /upload with malformed and hostile PDFs: always a 4xx with a reason, server keeps serving."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from refserver.auth.ratelimit import SecurityLimits, configure
from tests.security import hostile
from tests.security.conftest import SecApp

MAKERS = {**hostile.HOSTILE, "decompression_bomb": lambda: hostile.decompression_bomb(300)}


def _upload(sec: SecApp, data: bytes, name: str = "paper.pdf", role: str = "editor"):  # noqa: ANN202
    return sec.client.post(
        "/upload",
        headers=sec.headers[role],
        files={"file": (name, data, "application/pdf")},
    )


def test_hostile_uploads_are_refused_and_the_server_keeps_serving(sec: SecApp) -> None:
    files = {name: make() for name, make in MAKERS.items()}
    health_times: list[float] = []
    stop = threading.Event()

    def probe() -> None:  # the server must answer while hostile files are checked
        while not stop.is_set():
            t0 = time.monotonic()
            assert sec.client.get("/health").status_code == 200
            health_times.append(time.monotonic() - t0)
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for name, data in files.items():
            r = _upload(sec, data, name=f"{name}.pdf")
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:200])
            detail = r.json()["detail"]
            assert isinstance(detail, str) and detail, name
            assert "Traceback" not in r.text
    finally:
        stop.set()
        prober.join()
    assert health_times and max(health_times) < 5
    assert sec.client.get("/health").json()["status"] == "healthy"
    # Nothing was queued or stored for any of them; the staging folder is clean.
    assert sec.ctx.jobs.counts().get("queued", 0) == 0
    assert not any(sec.ctx.settings.staging_dir.iterdir())
    rejected, total = sec.ctx.accounts.audit_entries(action="upload_rejected", limit=100)
    assert total == len(files)
    assert {e.detail["code"] for e in rejected} >= {"active_content", "not_pdf", "too_complex"}
    # A good PDF is still accepted afterwards.
    r = _upload(sec, hostile.valid_pdf("After the storm, a normal paper."))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"


def test_oversized_upload_is_413(tmp_path: Path) -> None:
    from tests.security.conftest import _open

    gen = _open(tmp_path / "small", max_upload_mb=1, public_read=False)
    sec = next(gen)
    try:
        big = hostile.valid_pdf() + b"%" + b"x" * (2 * 1024 * 1024)
        r = _upload(sec, big)
        assert r.status_code == 413, r.text
        assert "limit" in r.json()["detail"]
    finally:
        gen.close()


def test_filename_is_never_a_path(sec: SecApp) -> None:
    r = _upload(sec, hostile.valid_pdf("Name games."), name="../../../../etc/passwd.pdf")
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "../../../../etc/passwd.pdf"  # echoed as given ...
    job = sec.ctx.jobs.get(r.json()["job_id"])
    assert job.filename == "passwd.pdf"  # ... but stored as a bare label
    staged = Path(job.staged_path)
    assert staged.parent == sec.ctx.settings.staging_dir
    assert "passwd" not in staged.name


def test_upload_rate_limit_per_user(sec: SecApp) -> None:
    configure(sec.app, SecurityLimits(upload="3/minute"))
    data = hostile.not_a_pdf()  # rejected quickly, but still counts as an upload
    codes = [_upload(sec, data).status_code for _ in range(4)]
    assert codes[:3] == [400, 400, 400]
    assert codes[3] == 429
    limited = _upload(sec, data)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # Another user has their own allowance.
    assert _upload(sec, data, role="admin").status_code == 400
