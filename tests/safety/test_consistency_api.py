"""The consistency routes (exact contract, roles) and the ``refserver check`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from refserver.storage.vectors import PAGES
from tests.conftest import ADMIN_PASSWORD, login, make_settings, make_text_pdf
from tests.safety.test_consistency import ingest

CHECK_KEYS = {
    "overall_status",
    "duration_seconds",
    "total_issues",
    "issues_by_type",
    "issues_by_severity",
    "issues",
    "recommendations",
}
ISSUE_KEYS = {"type", "doc_id", "page", "severity", "description", "suggested_fix"}


def _paper(ctx: Any, tmp_path: Path, name: str = "p") -> str:
    texts = [
        f"Page {n} of a study of tidal energy converters and their moorings. " * 12 for n in (1, 2)
    ]
    return ingest(ctx, make_text_pdf(tmp_path / f"{name}.pdf", texts, title="Tidal energy"))


def test_routes_contract_and_roles(
    client: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    ctx = client.app.state.ctx
    ctx.accounts.create("ada", "ada-password-123", role="admin")
    ctx.accounts.create("rex", "rex-password-123", role="reader")
    admin = login(client, "ada", "ada-password-123")
    reader = login(client, "rex", "rex-password-123")
    doc = _paper(ctx, tmp_path)

    base = "/admin/consistency"
    assert client.get(f"{base}/summary").status_code == 401
    assert client.get(f"{base}/check").status_code == 401
    assert client.post(f"{base}/fix").status_code == 401
    assert client.get(f"{base}/check", headers=reader).status_code == 403
    assert client.get(f"{base}/history", headers=reader).status_code == 403
    assert client.post(f"{base}/fix", headers=admin).status_code == 403

    r = client.get(f"{base}/check", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= CHECK_KEYS
    assert body["overall_status"] == "healthy" and body["total_issues"] == 0
    assert body["issues"] == [] and body["issues_by_type"] == {}
    assert body["issues_by_severity"] == {"critical": 0, "high": 0, "medium": 0, "low": 0}

    ctx.vectors.delete(PAGES, ids=[f"{doc}:2"])
    s = client.get(f"{base}/summary", headers=admin).json()
    assert set(s) == {
        "status",
        "sqlite_papers",
        "chromadb_papers",
        "counts_match",
        "total_issues",
        "last_check",
    }
    assert s["sqlite_papers"] == 1 and s["chromadb_papers"] == 1 and s["counts_match"] is False
    assert s["last_check"]["total_issues"] == 0

    r = client.post(f"{base}/check", headers=admin)
    body = r.json()
    assert r.status_code == 200 and body["total_issues"] == 2
    assert body["issues_by_type"] == {"missing_in_chromadb": 1, "count_mismatch": 1}
    assert body["issues_by_severity"]["high"] == 1 and body["issues_by_severity"]["medium"] == 1
    missing = next(i for i in body["issues"] if i["type"] == "missing_in_chromadb")
    assert set(missing) >= ISSUE_KEYS and missing["doc_id"] == doc and missing["page"] == 2
    assert body["recommendations"]

    assert client.post(f"{base}/fix", headers=auth, json=["nonsense"]).status_code == 400
    r = client.post(
        f"{base}/fix", headers=auth, json={"types": ["missing_in_chromadb"], "dry_run": True}
    )
    assert r.json()["fixed_count"] == 1 and ctx.vectors.get(PAGES, [f"{doc}:2"])["ids"] == []
    r = client.post(f"{base}/fix", headers=auth, json=["missing_in_chromadb", "count_mismatch"])
    assert r.status_code == 200, r.text
    fixed = r.json()
    assert {"fixed_count", "failed_count", "fixed", "failed"} <= set(fixed)
    assert fixed["fixed_count"] == 2 and fixed["failed_count"] == 0 and fixed["failed"] == []
    assert client.get(f"{base}/check", headers=admin).json()["total_issues"] == 0

    hist = client.get(f"{base}/history", headers=admin).json()["items"]
    kinds = [h["kind"] for h in hist]
    assert kinds.count("fix") == 1 and kinds.count("check") >= 4
    assert hist[0]["kind"] == "check" and hist[0]["total_issues"] == 0
    fix_run = next(h for h in hist if h["kind"] == "fix")
    assert fix_run["fixed_count"] == 2 and fix_run["username"] == "admin"
    assert client.get(f"{base}/summary", headers=admin).json()["status"] == "healthy"


def test_cli_check_prints_a_table_and_fixes(tmp_path: Path) -> None:
    from refserver.context import AppContext

    data = tmp_path / "data"
    ctx = AppContext(make_settings(data))
    try:
        doc = _paper(ctx, tmp_path)
        ctx.vectors.delete(PAGES, ids=[f"{doc}:1"])
    finally:
        ctx.close()
    env = dict(os.environ)
    env.update(
        {
            "REFSERVER_DATA_DIR": str(data),
            "REFSERVER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "COLUMNS": "220",
        }
    )
    run = [sys.executable, "-m", "refserver.cli", "check"]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 1, first.stderr
    assert "missing_in_chromadb" in first.stdout and "Consistency issues" in first.stdout
    fixed = subprocess.run(
        [*run, "--fix", "--types", "missing_in_chromadb,count_mismatch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "Repairs" in fixed.stdout and "status healthy" in fixed.stdout
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "status healthy" in again.stdout
    rebuilt = subprocess.run(
        [*run, "--rebuild-index", "--json"], env=env, capture_output=True, text=True, timeout=180
    )
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert '"rebuilt"' in rebuilt.stdout and '"pages": 2' in rebuilt.stdout


def test_check_and_fix_as_jobs(client: TestClient, auth: dict[str, str], tmp_path: Path) -> None:
    from tests.conftest import wait_job

    ctx = client.app.state.ctx
    doc = _paper(ctx, tmp_path)
    ctx.vectors.reset_collection(PAGES)
    r = client.post(
        "/admin/consistency/fix", headers=auth, json={"rebuild_index": True, "background": True}
    )
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], auth)
    assert job["status"] == "completed", job
    assert ctx.vectors.get(PAGES, [f"{doc}:1", f"{doc}:2"])["ids"] == [f"{doc}:1", f"{doc}:2"]
    r = client.get("/admin/consistency/check?background=true", headers=auth)
    assert r.status_code == 202
    job = wait_job(client, r.json()["job_id"], auth)
    assert job["status"] == "completed" and job["kind"] == "consistency"
    runs = ctx.extras["consistency"].history(ctx.db, limit=5)
    assert runs[0]["kind"] == "check" and runs[0]["total_issues"] == 0
    assert any(h["kind"] == "fix" for h in runs)
    assert (
        client.post(
            "/admin/consistency/fix?background=true", headers=auth, json=["nope"]
        ).status_code
        == 400
    )
