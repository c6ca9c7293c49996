"""Sessions, CSRF, rate limits, lockout, tokens, re-authentication, startup and error hygiene."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient

from refserver.api.deps import ReauthDep
from refserver.auth.csrf import get_csrf_token
from refserver.auth.ratelimit import SecurityLimits, configure
from refserver.config import DEFAULT_SECRET_KEY
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.security.conftest import ROLE_PASSWORD, SecApp


@pytest.fixture
def web(tmp_path: Path) -> Iterator[TestClient]:
    """An app with two probe routes: the session's CSRF token, and a re-authenticated action."""
    from refserver.api.app import create_app

    probe = APIRouter()

    @probe.get("/_probe/csrf")
    def csrf(request: Request) -> dict[str, str]:
        return {"csrf": get_csrf_token(request)}

    @probe.post("/_probe/dangerous")
    def dangerous(user: ReauthDep) -> dict[str, Any]:
        return {"done": True, "by": user.username}

    app = create_app(make_settings(tmp_path / "data"), start_workers=False)
    app.include_router(probe)
    with TestClient(app, follow_redirects=False) as client:
        yield client


def _form_login(client: TestClient, password: str = ADMIN_PASSWORD) -> Any:
    return client.post("/admin/login", data={"username": "admin", "password": password})


def _token(client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    r = client.post("/api/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


# --- sessions and CSRF ---------------------------------------------------------------
def test_form_login_sets_httponly_samesite_cookie(web: TestClient) -> None:
    r = _form_login(web)
    assert r.status_code == 302 and r.headers["location"] == "/admin/dashboard"
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("refserver_session=")
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert web.get("/api/me").json()["username"] == "admin"


def test_failed_form_login_shows_the_form_again(web: TestClient) -> None:
    r = _form_login(web, "wrong-password")
    assert r.status_code == 401
    assert "text/html" in r.headers["content-type"]
    assert "refserver_session" not in r.headers.get("set-cookie", "") or "uid" not in r.text


def test_csrf_required_for_cookie_sessions(web: TestClient) -> None:
    _form_login(web)
    refused = web.post("/api/tokens", json={"name": "x"})
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    wrong = web.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    token = web.get("/_probe/csrf").json()["csrf"]
    ok = web.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text
    # Forms carry it as a field.
    assert web.post("/admin/logout", data={}).status_code == 403
    out = web.post("/admin/logout", data={"csrf_token": token})
    assert out.status_code == 302
    assert web.get("/api/me").status_code == 401


def test_bearer_requests_need_no_csrf(web: TestClient) -> None:
    headers = {"Authorization": f"Bearer {_token(web)}"}
    assert web.post("/api/tokens", json={"name": "cli"}, headers=headers).status_code == 201


def test_password_change_signs_out_other_sessions(web: TestClient, tmp_path: Path) -> None:
    _form_login(web)
    assert web.get("/api/me").status_code == 200
    other = TestClient(web.app, follow_redirects=False)  # another client, same running app
    headers = {"Authorization": f"Bearer {_token(other)}"}
    r = other.post(
        "/api/me/password",
        json={"current_password": ADMIN_PASSWORD, "new_password": "a-brand-new-password"},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    bad = other.post(
        "/api/me/password",
        json={"current_password": "not-it", "new_password": "whatever-else"},
        headers=headers,
    )
    assert bad.status_code == 400
    assert web.get("/api/me").status_code == 401  # the old browser session is gone


# --- login throttling and lockout ------------------------------------------------------
def test_login_rate_limit_per_client_and_username(web: TestClient) -> None:
    codes = [
        web.post("/api/login", json={"username": "nobody", "password": "x" * 8}).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [401] * 10
    assert codes[10] == 429
    r = web.post("/api/login", json={"username": "nobody", "password": "x" * 8})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # Another username from the same client still gets through (until the per-client cap).
    assert _token(web)
    throttled, _ = web.app.state.ctx.accounts.audit_entries(action="login_throttled")
    assert throttled and throttled[0].username == "nobody"


def test_login_rate_limit_per_client(web: TestClient) -> None:
    configure(web.app, SecurityLimits(login_per_ip="5/minute"))
    codes = [
        web.post("/api/login", json={"username": f"user{i}", "password": "x" * 8}).status_code
        for i in range(6)
    ]
    assert codes == [401] * 5 + [429]
    form = web.post("/admin/login", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert form.status_code == 429  # the form shows the error instead of signing in
    assert "too many" in form.text


def test_lockout_after_five_failures(web: TestClient) -> None:
    ctx = web.app.state.ctx
    ctx.accounts.create("locky", ROLE_PASSWORD, "reader")
    for _ in range(5):
        r = web.post("/api/login", json={"username": "locky", "password": "wrong-guess"})
        assert r.status_code == 401
    r = web.post("/api/login", json={"username": "locky", "password": ROLE_PASSWORD})
    assert r.status_code == 429
    assert "locked" in r.json()["detail"]
    failed, total = ctx.accounts.audit_entries(action="login_failed", username="locky")
    assert total == 6
    # After the lock expires the right password works again.
    from sqlalchemy import select

    from refserver.storage.models import User

    with ctx.db.write(bump=False) as s:
        user = s.execute(select(User).where(User.username == "locky")).scalar_one()
        user.locked_until = user.locked_until.replace(year=2000)
    assert _token(web, "locky", ROLE_PASSWORD)


# --- tokens ---------------------------------------------------------------------------------
def test_token_create_list_revoke(sec: SecApp) -> None:
    c = sec.client
    made = c.post("/api/tokens", json={"name": "laptop"}, headers=sec.headers["editor"])
    assert made.status_code == 201
    body = made.json()
    token, token_id = body["token"], body["id"]
    mine = {"Authorization": f"Bearer {token}"}
    assert c.get("/api/me", headers=mine).json()["username"] == "editor-user"
    listed = c.get("/api/tokens", headers=mine).json()["tokens"]
    assert any(t["id"] == token_id and t["name"] == "laptop" for t in listed)
    assert all("token" not in t for t in listed)  # values are never shown again
    # Someone else cannot revoke it.
    other = c.delete(f"/api/tokens/{token_id}", headers=sec.headers["superuser"])
    assert other.status_code == 404
    assert c.delete(f"/api/tokens/{token_id}", headers=mine).json() == {
        "id": token_id,
        "revoked": True,
    }
    revoked = c.get("/api/me", headers=mine)
    assert revoked.status_code == 401
    assert "WWW-Authenticate" in revoked.headers
    assert c.get("/api/me", headers={"Authorization": "Bearer rs_made-up"}).status_code == 401


def test_disabling_a_user_revokes_their_tokens(sec: SecApp) -> None:
    c = sec.client
    assert c.get("/api/me", headers=sec.headers["reader"]).status_code == 200
    r = c.post("/admin/users/reader-user/disable", headers=sec.headers["superuser"])
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert c.get("/api/me", headers=sec.headers["reader"]).status_code == 401


# --- re-authentication ------------------------------------------------------------------------
def test_reauth_dependency(web: TestClient) -> None:
    headers = {"Authorization": f"Bearer {_token(web)}"}
    missing = web.post("/_probe/dangerous", headers=headers)
    assert missing.status_code == 428
    assert "X-Confirm-Password" in missing.json()["detail"]
    wrong = web.post("/_probe/dangerous", headers={**headers, "X-Confirm-Password": "nope"})
    assert wrong.status_code == 403
    ok = web.post("/_probe/dangerous", headers={**headers, "X-Confirm-Password": ADMIN_PASSWORD})
    assert ok.json() == {"done": True, "by": "admin"}
    as_json = web.post(
        "/_probe/dangerous", headers=headers, json={"confirm_password": ADMIN_PASSWORD}
    )
    assert as_json.status_code == 200
    as_form = web.post(
        "/_probe/dangerous", headers=headers, data={"confirm_password": ADMIN_PASSWORD}
    )
    assert as_form.status_code == 200
    assert web.post("/_probe/dangerous").status_code == 401
    failed, _ = web.app.state.ctx.accounts.audit_entries(action="reauth_failed")
    assert len(failed) == 1 and failed[0].target == "/_probe/dangerous"


# --- startup ---------------------------------------------------------------------------------
def test_production_refuses_the_default_secret_key(tmp_path: Path) -> None:
    from refserver.api.app import create_app

    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(make_settings(tmp_path / "p", environment="production"))
    settings = make_settings(tmp_path / "p", environment="production", secret_key="s" * 40)
    assert create_app(settings) is not None
    assert make_settings(tmp_path / "d").secret_key == DEFAULT_SECRET_KEY
    assert create_app(make_settings(tmp_path / "d")) is not None  # development may


def test_first_start_prints_a_generated_password_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refserver.api.app import create_app

    settings = make_settings(tmp_path / "first", admin_password=None)
    with TestClient(create_app(settings, start_workers=False)):
        pass
    out = capsys.readouterr().out
    assert "Created superuser 'admin' with password:" in out
    password = out.split("with password:")[1].split()[0]
    assert len(password) >= 20
    with TestClient(create_app(settings, start_workers=False)) as c:
        assert _token(c, "admin", password)
    assert "password" not in capsys.readouterr().out


# --- responses ---------------------------------------------------------------------------------
def test_security_headers_on_html(web: TestClient) -> None:
    r = web.get("/admin/login")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"]


def test_no_stack_traces_or_secrets_in_500(tmp_path: Path) -> None:
    from refserver.api.app import create_app

    app = create_app(make_settings(tmp_path / "data", secret_key="k" * 40), start_workers=False)
    boom = APIRouter()

    @boom.get("/_probe/boom")
    def explode() -> None:
        raise RuntimeError(f"database password is {ADMIN_PASSWORD} at /srv/secret/path")

    app.include_router(boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/_probe/boom")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    for leak in ("Traceback", ADMIN_PASSWORD, "/srv/secret", "k" * 40, "RuntimeError"):
        assert leak not in r.text


def test_login_errors_do_not_echo_passwords(web: TestClient) -> None:
    r = web.post("/api/login", json={"username": "admin", "password": "hunter2-secret"})
    assert r.status_code == 401 and "hunter2" not in r.text
    r = web.post(
        "/admin/users",
        json={"username": "shorty", "password": "tiny"},
        headers={"Authorization": f"Bearer {_token(web)}"},
    )
    assert r.status_code == 400 and "tiny" not in r.text


def test_require_unless_setting(sec: SecApp) -> None:
    from fastapi import Depends

    from refserver.api.deps import require_unless_setting

    probe = APIRouter()

    @probe.get(
        "/_probe/optional", dependencies=[Depends(require_unless_setting("public_read", "admin"))]
    )
    def optional() -> dict[str, bool]:
        return {"ok": True}

    sec.app.include_router(probe)  # public_read is off here
    assert sec.client.get("/_probe/optional").status_code == 401
    assert sec.client.get("/_probe/optional", headers=sec.headers["editor"]).status_code == 403
    assert sec.client.get("/_probe/optional", headers=sec.headers["admin"]).status_code == 200
    sec.ctx.settings.public_read = True  # the setting opens it
    assert sec.client.get("/_probe/optional").status_code == 200
