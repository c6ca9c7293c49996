"""Users API (superusers) and the audit trail of logins, uploads, edits, deletes, user changes."""

from __future__ import annotations

from typing import Any

from tests.security import hostile
from tests.security.conftest import ROLE_PASSWORD, SecApp, add_paper


def _audit(sec: SecApp, **params: Any) -> list[dict[str, Any]]:
    r = sec.client.get("/admin/audit", params=params, headers=sec.headers["superuser"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["entries"], list) and body["total"] >= len(body["entries"])
    return body["entries"]


def test_user_management(sec: SecApp) -> None:
    c, su = sec.client, sec.headers["superuser"]
    made = c.post(
        "/admin/users", json={"username": "newbie", "password": "long-enough-pw"}, headers=su
    )
    assert made.status_code == 201
    assert made.json()["role"] == "reader" and made.json()["is_active"] is True
    assert (
        c.post(
            "/admin/users", json={"username": "newbie", "password": "long-enough-pw"}, headers=su
        ).status_code
        == 409
    )
    bad_role = c.post("/admin/users/newbie/role", json={"role": "god"}, headers=su)
    assert bad_role.status_code == 400
    promoted = c.post("/admin/users/newbie/role", json={"role": "editor"}, headers=su)
    assert promoted.json()["role"] == "editor"
    assert c.post("/admin/users/newbie/disable", headers=su).json()["is_active"] is False
    assert (
        c.post("/api/login", json={"username": "newbie", "password": "long-enough-pw"}).status_code
        == 401
    )
    assert c.post("/admin/users/newbie/enable", headers=su).json()["is_active"] is True
    reset = c.post(
        "/admin/users/newbie/password", json={"password": "reset-password-1"}, headers=su
    )
    assert reset.status_code == 200
    assert (
        c.post(
            "/api/login", json={"username": "newbie", "password": "reset-password-1"}
        ).status_code
        == 200
    )
    users = {u["username"]: u for u in c.get("/admin/users", headers=su).json()["users"]}
    assert users["newbie"]["role"] == "editor"
    assert "password_hash" not in users["newbie"]
    assert c.post("/admin/users/ghost/disable", headers=su).status_code == 404


def test_last_superuser_cannot_be_removed(sec: SecApp) -> None:
    c, su = sec.client, sec.headers["superuser"]
    # Two superusers exist (admin and superuser-user): one may go, the last may not.
    assert c.post("/admin/users/admin/disable", headers=su).status_code == 200
    refused = c.post("/admin/users/superuser-user/role", json={"role": "admin"}, headers=su)
    assert refused.status_code == 409
    assert c.post("/admin/users/superuser-user/disable", headers=su).status_code == 409
    assert c.get("/api/me", headers=su).json()["role"] == "superuser"


def test_audit_entries_for_login_upload_edit_delete_and_user_changes(sec: SecApp) -> None:
    c, su, editor = sec.client, sec.headers["superuser"], sec.headers["editor"]
    assert (
        c.post(
            "/api/login", json={"username": "editor-user", "password": ROLE_PASSWORD}
        ).status_code
        == 200
    )
    c.post("/api/login", json={"username": "editor-user", "password": "wrong-password"})
    up = c.post(
        "/upload",
        headers=editor,
        files={"file": ("audited.pdf", hostile.valid_pdf("An audited upload."), "application/pdf")},
    )
    assert up.status_code == 200, up.text
    doc_id = add_paper(sec.ctx, "Paper to edit and delete")
    assert (
        c.patch(f"/metadata/{doc_id}", json={"title": "Edited title"}, headers=editor).status_code
        == 200
    )
    assert c.delete(f"/paper/{doc_id}", headers=su).status_code == 200
    assert (
        c.post(
            "/admin/users", json={"username": "audited", "password": "audited-password"}, headers=su
        ).status_code
        == 201
    )
    assert (
        c.post("/admin/users/audited/role", json={"role": "admin"}, headers=su).status_code == 200
    )
    assert c.post("/admin/users/audited/disable", headers=su).status_code == 200

    entries = _audit(sec, limit=200)
    actions = [e["action"] for e in entries]
    for expected in (
        "login",
        "login_failed",
        "upload",
        "edit_metadata",
        "delete_paper",
        "user_create",
        "user_role",
        "user_disable",
    ):
        assert expected in actions, f"no {expected} audit entry in {actions}"
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)  # newest first

    upload = _audit(sec, action="upload")[0]
    assert upload["username"] == "editor-user" and upload["target"] == up.json()["job_id"]
    assert upload["detail"]["filename"] == "audited.pdf"
    edit = _audit(sec, action="edit_metadata")[0]
    assert edit["target"] == doc_id and edit["detail"]["fields"] == ["title"]
    role = _audit(sec, action="user_role")[0]
    assert role["username"] == "superuser-user" and role["target"] == "audited"
    assert role["detail"] == {"from": "reader", "to": "admin"}
    by_editor = _audit(sec, username="editor-user")
    assert by_editor and all(e["username"] == "editor-user" for e in by_editor)
    assert _audit(sec, limit=2, offset=1)[0]["id"] == ids[1]
    failed = _audit(sec, action="login_failed")[0]
    assert "wrong-password" not in str(failed)


def test_usernames_are_url_safe(sec: SecApp) -> None:
    su = sec.headers["superuser"]
    for bad in ("a/b", "../admin", "", "x" * 129, "tab\there", "émile"):
        r = sec.client.post(
            "/admin/users", json={"username": bad, "password": "long-enough-pw"}, headers=su
        )
        assert r.status_code == 400, bad
    ok = sec.client.post(
        "/admin/users",
        json={"username": "ann.lee+lab@x-y", "password": "long-enough-pw"},
        headers=su,
    )
    assert ok.status_code == 201
