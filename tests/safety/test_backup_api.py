"""The backup API contract: routes, fields, parameter forms, roles and status codes."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, login
from tests.safety.conftest import add_direct, library_state


def _admin(client: TestClient) -> dict[str, str]:
    client.app.state.ctx.accounts.create("ann", "ann-password-123", role="admin")
    return login(client, "ann", "ann-password-123")


def test_trigger_status_history_verify(client: TestClient, auth: dict, tmp_path: Path) -> None:
    ctx = client.app.state.ctx
    for path in ("/admin/backup/status", "/admin/backup/history"):
        assert client.get(path).status_code == 401
    assert client.post("/admin/backup/trigger").status_code == 401
    admin = _admin(client)
    for i in range(3):
        add_direct(ctx, tmp_path, i)

    r = client.post(
        "/admin/backup/trigger?backup_type=full&unified=True&description=nightly",
        headers=admin,
    )
    assert r.status_code == 200, r.text
    full = r.json()
    assert isinstance(full["backup_id"], str) and full["type"] == "full"
    assert full["status"] == "completed" and full["size_bytes"] > 0
    assert full["compressed"] is True and len(full["checksum"]) == 64
    assert full["description"] == "nightly"
    assert full["unified_id"] == full["backup_id"]
    assert set(full["components"]) == {"sqlite", "chromadb", "files"}
    assert full["components"]["chromadb"]["included"] is True

    add_direct(ctx, tmp_path, 9)
    r = client.post(
        "/admin/backup/trigger",
        headers=admin,
        data={"backup_type": "incremental", "compress": "0", "retention_days": "3"},
    )
    assert r.status_code == 200, r.text
    inc = r.json()
    assert inc["type"] == "incremental" and inc["compressed"] is False
    assert inc["retention_days"] == 3 and inc["parent_id"] == full["backup_id"]
    assert "unified_id" not in inc

    snap = client.post("/admin/backup/trigger?backup_type=snapshot&compress=false", headers=admin)
    assert snap.status_code == 200 and snap.json()["description"] == ""
    assert client.post("/admin/backup/trigger?compress=maybe", headers=admin).status_code == 422
    assert client.post("/admin/backup/trigger?backup_type=tape", headers=admin).status_code == 422
    r = client.post("/admin/backup/trigger?backup_type=snapshot&unified=1", headers=admin)
    assert r.status_code == 400

    st = client.get("/admin/backup/status", headers=admin).json()
    assert set(st["sqlite"]) >= {
        "scheduler_running",
        "total_backups",
        "backup_counts",
        "total_size_bytes",
        "latest_backup",
        "scheduled_jobs",
    }
    assert st["sqlite"]["total_backups"] == 3
    assert st["sqlite"]["backup_counts"] == {"snapshot": 1, "full": 1, "incremental": 1}
    assert st["sqlite"]["scheduled_jobs"] == [] and st["sqlite"]["scheduler_running"] is False
    assert set(st["chromadb"]) >= {
        "directory_exists",
        "total_backups",
        "latest_backup",
        "total_size_bytes",
    }
    assert st["chromadb"]["total_backups"] == 1 and st["chromadb"]["directory_exists"]
    assert st["files"]["total_files"] == 4
    assert st["unified_backup_available"] is True
    assert st["status"] == "healthy" and st["last_backup"]["type"] == "snapshot"

    h = client.get("/admin/backup/history", headers=admin).json()
    assert h["total"] == 3
    assert [b["type"] for b in h["backups"]] == ["snapshot", "incremental", "full"]
    assert all(isinstance(b["description"], str) for b in h["backups"])
    h = client.get("/admin/backup/history?type=full", headers=admin).json()
    assert h["total"] == 1 and h["backups"][0]["backup_id"] == full["backup_id"]
    h = client.get("/admin/backup/history?limit=1&offset=1", headers=admin).json()
    assert [b["type"] for b in h["backups"]] == ["incremental"] and h["total"] == 3

    v = client.post(f"/admin/backup/verify/{inc['backup_id']}", headers=admin)
    assert v.status_code == 200, v.text
    body = v.json()
    assert body["backup_id"] == inc["backup_id"] and body["integrity_check"] == "passed"
    assert isinstance(body["checks"], list) and body["checks"]
    missing = "20200101T000000Z-full-0000"
    assert client.post(f"/admin/backup/verify/{missing}", headers=admin).status_code == 404

    hc = client.post("/admin/backup/health-check", headers=admin).json()
    assert set(hc) >= {"status", "timestamp", "backup_status"}
    assert hc["backup_status"]["total_backups"] == 3
    assert hc["backup_status"]["scheduled_jobs"] == []
    assert hc["backup_status"]["scheduler_running"] is False


def test_restore_and_cleanup(client: TestClient, auth: dict, tmp_path: Path) -> None:
    ctx = client.app.state.ctx
    admin = _admin(client)
    for i in range(2):
        add_direct(ctx, tmp_path, i)
    full = client.post("/admin/backup/trigger?backup_type=full", headers=auth).json()
    bid = full["backup_id"]
    before = library_state(ctx)
    add_direct(ctx, tmp_path, 5)

    assert client.post(f"/admin/backup/restore/{bid}").status_code == 401
    assert client.post(f"/admin/backup/restore/{bid}", headers=admin).status_code == 403
    assert client.delete("/admin/backup/cleanup", headers=admin).status_code == 403

    unknown = "20200101T000000Z-full-0000"
    assert client.post(f"/admin/backup/restore/{unknown}", headers=auth).status_code == 404
    r = client.post("/admin/backup/restore", headers=auth, data={"backup_id": unknown})
    assert r.status_code == 404
    assert client.post("/admin/backup/restore/not-an-id", headers=auth).status_code == 404
    for bad in ("/etc/refserver", "../outside", "inspect/../../x", ""):
        r = client.post(
            f"/admin/backup/restore/{bid}", headers=auth, data={"target_path": bad or " "}
        )
        assert r.status_code == 400, (bad, r.text)

    r = client.post(f"/admin/backup/restore/{bid}?target_path=inspect", headers=auth)
    assert r.status_code == 200, r.text
    inspect = ctx.settings.restore_dir / "inspect"
    assert (inspect / "refserver.db").exists() and (inspect / "chroma").is_dir()
    assert len(list((inspect / "files").glob("*/*.pdf"))) == 2
    assert len(library_state(ctx)["papers"]) == 3  # live data untouched
    r = client.post(f"/admin/backup/restore/{bid}?target_path=inspect", headers=auth)
    assert r.status_code == 400  # not empty any more

    r = client.post("/admin/backup/restore", headers=auth, json={"backup_id": bid})
    assert r.status_code == 428  # overwriting live data asks for the password again
    r = client.post(
        "/admin/backup/restore",
        headers=auth,
        json={"backup_id": bid, "confirm_password": "wrong-pass"},
    )
    assert r.status_code == 403
    confirm = {**auth, "X-Confirm-Password": ADMIN_PASSWORD}
    r = client.post("/admin/backup/restore", headers=confirm, json={"backup_id": bid})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "completed" and out["safety_backup_id"]
    after = library_state(ctx)
    assert after["papers"] == before["papers"] and after["files"] == before["files"]
    # the server keeps working on the restored stores
    assert client.get("/admin/backup/history", headers=auth).json()["total"] == 2

    r = client.delete("/admin/backup/cleanup?dry_run=true&keep_last=1", headers=auth)
    assert r.status_code == 200, r.text
    dry = r.json()
    assert dry["dry_run"] is True and dry["would_remove"] == [bid]
    assert client.get("/admin/backup/history", headers=auth).json()["total"] == 2
    r = client.request(
        "DELETE", "/admin/backup/cleanup", headers=auth, data={"dry_run": "False", "keep_last": "1"}
    )
    done = r.json()
    assert done["deleted"] == [bid]
    assert client.get("/admin/backup/history", headers=auth).json()["total"] == 1


def _wait_restore(client: TestClient, job_id: str, headers: dict, timeout: float = 180) -> dict:
    """Poll a restore job: its record briefly vanishes while the old database is swapped out."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/job/{job_id}", headers=headers)
        if r.status_code == 200 and r.json()["status"] in ("completed", "failed", "cancelled"):
            return r.json()
        assert r.status_code in (200, 404, 503), r.text
        time.sleep(0.2)
    raise AssertionError(f"restore job {job_id} did not finish")


def test_large_libraries_back_up_and_restore_as_jobs(
    client: TestClient, auth: dict, tmp_path: Path, monkeypatch
) -> None:
    from refserver.safety import service
    from tests.conftest import wait_job

    ctx = client.app.state.ctx
    add_direct(ctx, tmp_path, 1)
    monkeypatch.setattr(service, "SYNC_LIMIT_BYTES", 0)  # every library counts as large
    r = client.post("/admin/backup/trigger", headers=auth, data={"backup_type": "full"})
    assert r.status_code == 200, r.text
    queued = r.json()
    assert queued["status"] == "queued" and queued["job_id"]
    job = wait_job(client, queued["job_id"], auth)
    assert job["status"] == "completed", job
    assert job["result_summary"]["backup_id"] == queued["backup_id"]
    h = client.get("/admin/backup/history", headers=auth).json()
    assert h["backups"][0]["backup_id"] == queued["backup_id"]
    assert h["backups"][0]["status"] == "completed"

    add_direct(ctx, tmp_path, 2)
    r = client.post(
        f"/admin/backup/restore/{queued['backup_id']}",
        headers={**auth, "X-Confirm-Password": ADMIN_PASSWORD},
    )
    assert r.status_code == 200 and r.json()["status"] == "queued"
    job = _wait_restore(client, r.json()["job_id"], auth)
    assert job["status"] == "completed", job
    assert job["result_summary"]["generation"] == h["backups"][0]["generation"]
    assert len(library_state(ctx)["papers"]) == 1
