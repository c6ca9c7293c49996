"""The HTTP contract: /admin/disaster-recovery/status|test, /admin/scheduler, /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import login, wait_job
from tests.recovery.conftest import add_papers, full_backup, recovery_settings

STATUS_KEYS = {
    "status",
    "readiness",
    "readiness_score",
    "readiness_level",
    "criteria",
    "sqlite_backups",
    "chromadb_backups",
    "recent_successful_backups",
    "last_verified_backup",
    "last_drill",
    "free_disk_space_gb",
    "scheduler_running",
    "recovery_scripts_available",
    "recommendations",
}


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    from refserver.api.app import create_app

    settings = recovery_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        add_papers(ctx, tmp_path / "pdfs", 3)
        yield client, login(client)


def test_status_contract(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = app_client
    assert client.get("/admin/disaster-recovery/status").status_code == 401
    body = client.get("/admin/disaster-recovery/status", headers=headers).json()
    assert set(body) == STATUS_KEYS
    assert body["readiness_score"] == "1/10"
    assert isinstance(body["criteria"], list) and len(body["criteria"]) == 7
    for c in body["criteria"]:
        assert set(c) == {"name", "ok", "detail", "points"}
        assert isinstance(c["ok"], bool) and isinstance(c["points"], int)
    assert body["recent_successful_backups"] == [] and body["last_drill"] is None
    assert body["recovery_scripts_available"] == {"disaster_recovery": True, "backup_check": True}
    assert isinstance(body["free_disk_space_gb"], float)
    assert body["recommendations"] and all(isinstance(r, str) for r in body["recommendations"])

    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    full_backup(ctx)
    body = client.get("/admin/disaster-recovery/status", headers=headers).json()
    assert body["readiness_score"] == "4/10"
    assert body["sqlite_backups"] == 1 and body["chromadb_backups"] == 1
    assert body["last_verified_backup"]["type"] == "full"


def test_drill_on_demand_as_a_job_and_synchronously(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = app_client
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    assert client.post("/admin/disaster-recovery/test").status_code in (401, 403)
    m = full_backup(ctx)
    r = client.post("/admin/disaster-recovery/test", headers=headers)
    assert r.status_code == 200, r.text
    job = wait_job(client, r.json()["job_id"], headers, timeout=120)
    assert job["status"] == "completed", job
    assert job["result_summary"]["backup_id"] == m.id and job["result_summary"]["passed"]
    # Synchronously (wait=true): a listed-format id with no backup fails with the reason.
    gone = "20200101T000000Z-full-abcd"
    body = client.post(
        "/admin/disaster-recovery/test", headers=headers, params={"wait": "true", "backup_id": gone}
    ).json()
    assert body["passed"] is False and body["status"] == "failed" and body["job_id"] is None
    assert gone in body["error"]
    status = client.get("/admin/disaster-recovery/status", headers=headers).json()
    assert status["last_drill"]["passed"] is False  # the newest drill is the failed one
    assert any(c["name"] == "restore_drill" and not c["ok"] for c in status["criteria"])
    assert (
        client.post(
            "/admin/disaster-recovery/test", headers=headers, params={"backup_id": "../etc"}
        ).status_code
        == 400
    )


def test_metrics_needs_an_admin_and_exposes_protection_facts(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = app_client
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    assert client.get("/metrics").status_code == 401
    full_backup(ctx)
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in (
        'refserver_backup_age_seconds{type="full"}',
        'refserver_backup_size_bytes{type="full"}',
        'refserver_backup_duration_seconds{type="full"}',
        'refserver_backups{status="completed"} 1.0',
        "refserver_drill_last_passed 0.0",
        'refserver_jobs{status="queued"}',
        "refserver_job_queue_pending",
        "refserver_scheduler_running 0.0",
        "refserver_readiness_score 4.0",
        "refserver_free_disk_bytes",
    ):
        assert name in text, name
    ctx.settings.metrics_public = True
    assert client.get("/metrics").status_code == 200


def test_reader_cannot_see_recovery_routes(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = app_client
    ctx: Any = client.app.state.ctx  # type: ignore[attr-defined]
    ctx.accounts.create("reader1", "reader-password-1", "reader")
    reader = login(client, "reader1", "reader-password-1")
    for path in ("/admin/disaster-recovery/status", "/admin/scheduler", "/metrics"):
        assert client.get(path, headers=reader).status_code == 403, path
