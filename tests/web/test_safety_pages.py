"""Backup, consistency and recovery pages: forms, roles and a restore from the UI.

These pages sit on the backup, consistency and recovery areas; when a build lacks
one, its test is skipped with the reason (the page then says "not available").
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from refserver.web.views import optional_module
from tests.conftest import ADMIN_PASSWORD
from tests.web.conftest import form_login
from tests.web.test_pages import add_paper

needs_backup = pytest.mark.skipif(
    optional_module("refserver.safety.service") is None,
    reason="the backup engine is not part of this build",
)
needs_consistency = pytest.mark.skipif(
    optional_module("refserver.safety.consistency") is None,
    reason="the consistency checker is not part of this build",
)
needs_recovery = pytest.mark.skipif(
    optional_module("refserver.safety.readiness") is None,
    reason="the disaster-recovery module is not part of this build",
)


def flashes(html: str) -> list[str]:
    return re.findall(r'<p class="flash flash-\w+">([^<]*)</p>', html)


def wait_for_job(ctx: Any, job_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ctx.jobs.get(job_id)
        if job is not None and job.status in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def titles_in_library(ctx: Any) -> set[str]:
    from sqlalchemy import select

    from refserver.storage.models import Paper

    with ctx.db.read() as s:
        return set(s.execute(select(Paper.title)).scalars())


def test_safety_pages_need_admin(client: TestClient) -> None:
    ctx = client.app.state.ctx
    ctx.accounts.create("ed", "password-123", "editor")
    token = form_login(client, "ed", "password-123")
    for url in ("/admin/backup", "/admin/consistency", "/admin/disaster-recovery"):
        r = client.get(url)
        assert r.status_code == 403 and "This page needs the admin role" in r.text, url
    for url in (
        "/admin/ui/backup/trigger",
        "/admin/ui/consistency/check",
        "/admin/ui/disaster-recovery/drill",
    ):
        assert client.post(url, data={"csrf_token": token}).status_code == 403, url


@needs_backup
def test_backup_form_history_verify_and_restore(client: TestClient) -> None:
    ctx = client.app.state.ctx
    add_paper(ctx, "Kept Paper", authors=["A. Keeper"], year=2020, body="kept")
    token = form_login(client)
    page = client.get("/admin/backup")
    assert page.status_code == 200 and "No backups yet" in page.text
    assert client.post("/admin/ui/backup/trigger", data={"backup_type": "full"}).status_code == 403
    bad = client.post("/admin/ui/backup/trigger", data={"csrf_token": token, "backup_type": "x"})
    assert "Choose snapshot, full or incremental." in flashes(bad.text)
    bad = client.post(
        "/admin/ui/backup/trigger",
        data={"csrf_token": token, "backup_type": "full", "retention_days": "soon"},
    )
    assert "Retention must be a whole number of days, or empty." in flashes(bad.text)
    r = client.post(
        "/admin/ui/backup/trigger",
        data={
            "csrf_token": token,
            "backup_type": "full",
            "description": "known good",
            "retention_days": "30",
            "unified": "true",
            "compress": "true",
        },
    )
    msg = flashes(r.text)[0]
    assert msg.endswith("completed and verified."), msg
    backup_id = re.search(r"Backup (\S+) completed", msg).group(1)
    row = re.search(rf'<tr data-backup="{re.escape(backup_id)}">(.*?)</tr>', r.text, re.S).group(1)
    assert "known good" in row and "verified" in row and "unified" in row and "full" in row
    assert 'class="chart"' in r.text and "Backup sizes" in r.text
    assert 'id="schedule-table"' in r.text
    r = client.post(f"/admin/ui/backup/{backup_id}/verify", data={"csrf_token": token})
    assert f"Backup {backup_id} verified: every check passed." in flashes(r.text)
    assert (
        client.post("/admin/ui/backup/nope/verify", data={"csrf_token": token}).status_code == 404
    )

    # After the backup the library changes; restoring brings the earlier state back.
    add_paper(ctx, "Later Paper", authors=["B. Later"], year=2021, body="later")
    assert titles_in_library(ctx) == {"Kept Paper", "Later Paper"}
    url = f"/admin/ui/backup/{backup_id}/restore"
    r = client.post(url, data={"csrf_token": token, "confirm_password": ADMIN_PASSWORD})
    assert "Tick the confirmation box to restore." in flashes(r.text)
    r = client.post(url, data={"csrf_token": token, "confirm": "yes", "confirm_password": "bad"})
    assert "Password confirmation failed." in flashes(r.text)
    assert titles_in_library(ctx) == {"Kept Paper", "Later Paper"}
    r = client.post(
        url,
        data={"csrf_token": token, "confirm": "yes", "confirm_password": ADMIN_PASSWORD},
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, "/admin/queue")
    jobs, _ = ctx.jobs.list(limit=5)
    restore_job = next(j for j in jobs if j.kind == "restore")
    done = wait_for_job(ctx, restore_job.id)
    assert done.status == "completed", done.error_message
    assert titles_in_library(ctx) == {"Kept Paper"}
    # The restore took a safety backup first; the history shows it.
    page = client.get("/admin/backup").text
    assert ">safety</span>" in page


@needs_backup
def test_restore_is_for_the_superuser_only(client: TestClient) -> None:
    ctx = client.app.state.ctx
    ctx.accounts.create("ann", "password-123", "admin")
    token = form_login(client)
    r = client.post(
        "/admin/ui/backup/trigger",
        data={"csrf_token": token, "backup_type": "snapshot", "compress": "true"},
    )
    backup_id = re.search(r"Backup (\S+) completed", flashes(r.text)[0]).group(1)
    assert "Restore this backup" in r.text
    client.cookies.clear()
    token = form_login(client, "ann", "password-123")
    page = client.get("/admin/backup").text
    assert backup_id in page and "Restore this backup" not in page and ">Verify<" in page
    r = client.post(
        f"/admin/ui/backup/{backup_id}/restore",
        data={"csrf_token": token, "confirm": "yes", "confirm_password": "password-123"},
    )
    assert r.status_code == 403


@needs_consistency
def test_consistency_page_check_and_fix(client: TestClient) -> None:
    ctx = client.app.state.ctx
    doc = add_paper(ctx, "Indexed Paper", authors=["C. Index"], year=2019, body="indexed")
    token = form_login(client)
    page = client.get("/admin/consistency").text
    assert "No check has run yet." in page
    # Remove the paper's vectors from ChromaDB behind the library's back.
    ctx.vectors.delete_paper(doc)
    r = client.post("/admin/ui/consistency/check", data={"csrf_token": token})
    msg = flashes(r.text)[0]
    assert msg.startswith("Check finished") and "0 issue(s)" not in msg, msg
    assert "missing_in_chromadb" in r.text and 'id="issues-table"' in r.text
    assert f'href="/admin/papers/{doc}"' in r.text
    r = client.post("/admin/ui/consistency/fix", data={"csrf_token": token, "dry_run": "true"})
    assert flashes(r.text)[0].startswith("Would repair ")
    assert ctx.vectors.get("papers", [doc])["ids"] == []  # a dry run changes nothing
    r = client.post("/admin/ui/consistency/fix", data={"csrf_token": token})
    assert re.match(r"Repaired [1-9]\d* issue\(s\); 0 could not be repaired\.", flashes(r.text)[0])
    assert ctx.vectors.get("papers", [doc])["ids"] == [doc]
    r = client.post("/admin/ui/consistency/check", data={"csrf_token": token})
    assert "0 issue(s), status healthy" in flashes(r.text)[0]
    # A full index rebuild runs as a job; the index holds every vector afterwards.
    r = client.post(
        "/admin/ui/consistency/fix", data={"csrf_token": token, "rebuild_index": "true"}
    )
    assert "Index rebuild started as job" in flashes(r.text)[0]
    jobs, _ = ctx.jobs.list(limit=3)
    rebuild_job = next(j for j in jobs if j.kind != "ingest")
    assert wait_for_job(ctx, rebuild_job.id).status == "completed", rebuild_job.error_message
    queue = client.get("/admin/queue").text
    row = re.search(rf'<tr data-job="{rebuild_job.id}".*?</tr>', queue, re.S).group(0)
    assert 'href="/admin/consistency"' in row  # a job links to the page of its area
    assert ctx.vectors.get("papers", [doc])["ids"] == [doc]
    r = client.post("/admin/ui/consistency/check", data={"csrf_token": token})
    assert "0 issue(s), status healthy" in flashes(r.text)[0]
    history = re.search(r'id="consistency-history">(.*?)</table>', r.text, re.S).group(1)
    assert history.count("<tr>") >= 4  # header + check, fix(es), check


@needs_recovery
def test_recovery_page_readiness_and_drill(client: TestClient) -> None:
    ctx = client.app.state.ctx
    add_paper(ctx, "Drilled Paper", authors=["D. Drill"], year=2018, body="drill")
    token = form_login(client)
    page = client.get("/admin/disaster-recovery").text
    score = re.search(r'id="readiness-score">(\d+)/(\d+)<', page)
    assert score is not None
    before = int(score.group(1))
    assert "No drill has run yet." in page and 'id="recommendations"' in page
    if optional_module("refserver.safety.service") is not None:
        client.post("/admin/ui/backup/trigger", data={"csrf_token": token, "backup_type": "full"})
    r = client.post(
        "/admin/ui/disaster-recovery/drill", data={"csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303
    jobs, _ = ctx.jobs.list(limit=5)
    drill_job = next(j for j in jobs if j.kind == "drill")
    assert wait_for_job(ctx, drill_job.id).status == "completed"
    page = client.get("/admin/disaster-recovery").text
    assert re.search(r'id="drill-history">.*?status-passed', page, re.S)
    after = int(re.search(r'id="readiness-score">(\d+)/', page).group(1))
    assert after > before  # a verified backup and a passed drill both count
    dash = client.get("/admin/dashboard").text
    assert re.search(rf'data-stat="readiness">{after}/\d+<', dash)
