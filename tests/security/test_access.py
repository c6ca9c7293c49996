"""Every route against THE access table: statically (its dependencies) and by calling it.

A route that some area adds without a line in ``refserver.auth.access.ACCESS``
fails here with a message naming the route and the level its code enforces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refserver.auth.access import ACCESS, OTHER_ROUTES, access_markdown, app_routes, table_problems
from refserver.auth.users import ROLES
from tests.security.conftest import SecApp, _open

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
UNKNOWN_ID = "987654"


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecApp]:
    """One app for the whole walk (reading not public), to keep this file fast."""
    yield from _open(tmp_path_factory.mktemp("walk") / "data", public_read=False)


def _url(path: str) -> str:
    """The path with every parameter set to an id that does not exist (404 is 'allowed')."""
    return re.sub(r"\{[^}]+\}", UNKNOWN_ID, path)


# Requests that stop a slow handler early with a 4xx of its own (a real backup per
# role would cost seconds): passing the auth check is all the walk needs to see.
PROBES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/admin/backup/trigger"): {"params": {"backup_type": "no-such-type"}},
    ("POST", "/admin/ui/backup/trigger"): {"data": {"backup_type": "no-such-type"}},
}


def _call(sec: SecApp, method: str, path: str, headers: dict[str, str] | None) -> Any:
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if (method, path) in PROBES:
        kwargs.update(PROBES[(method, path)])
    elif method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return sec.client.request(method, _url(path), **kwargs)


def _denied_anonymous(resp: Any) -> bool:
    """401, or (HTML pages) a redirect to the login page."""
    if resp.status_code == 401:
        return True
    return resp.status_code in (302, 303, 307) and "/admin/login" in resp.headers.get(
        "location", ""
    )


def _refused(resp: Any) -> bool:
    """What an auth dependency answers: 401 asking to sign in, or 403."""
    if resp.status_code == 403:
        return True
    return resp.status_code == 401 and "www-authenticate" in resp.headers


def _describe(resp: Any) -> str:
    return f"{resp.status_code} {resp.text[:160]!r}"


def test_every_route_is_in_the_table_and_matches_its_code(sec: SecApp) -> None:
    routes = app_routes(sec.app)
    problems = table_problems(routes)
    assert not problems, "access table out of step with the app:\n" + "\n".join(problems)
    # The OpenAPI schema lists nothing the walk would miss.
    schema = sec.client.get("/openapi.json").json()
    walked = {(r.method, r.path) for r in routes}
    for path, ops in schema["paths"].items():
        for method in ops:
            assert (method.upper(), path) in walked, f"{method.upper()} {path} not walked"


def test_every_route_answers_by_role_as_the_table_says(sec: SecApp) -> None:
    failures: list[str] = []
    for route in app_routes(sec.app):
        entry = ACCESS.get((route.method, route.path))
        if entry is None:
            failures.append(f"{route.method} {route.path} is missing from the access table")
            continue
        resp = _call(sec, route.method, route.path, None)
        if entry.allows(None, public_read=False):
            if _refused(resp):
                failures.append(f"{route.method} {route.path} anonymous: {_describe(resp)}")
        elif not _denied_anonymous(resp):
            failures.append(
                f"{route.method} {route.path} anonymous should be 401: {_describe(resp)}"
            )
        for role in ROLES:
            resp = _call(sec, route.method, route.path, sec.headers[role])
            if entry.allows(role, public_read=False):
                if _refused(resp) or (entry.level != "public" and _denied_anonymous(resp)):
                    failures.append(
                        f"{route.method} {route.path} as {role} should pass: {_describe(resp)}"
                    )
                if entry.reauth and not entry.in_handler and resp.status_code != 428:
                    failures.append(
                        f"{route.method} {route.path} as {role} without the password "
                        f"should be 428: {_describe(resp)}"
                    )
            elif resp.status_code != 403:
                failures.append(
                    f"{route.method} {route.path} as {role} should be 403: {_describe(resp)}"
                )
    assert not failures, "\n".join(failures)


def test_public_read_opens_reading_and_nothing_else(sec_public: SecApp) -> None:
    failures = []
    for route in app_routes(sec_public.app):
        entry = ACCESS.get((route.method, route.path))
        if entry is None:
            failures.append(f"{route.method} {route.path} is missing from the access table")
            continue
        resp = _call(sec_public, route.method, route.path, None)
        if entry.level == "public":
            if _refused(resp):
                failures.append(f"{route.method} {route.path} should be open: {_describe(resp)}")
        elif entry.level == "read":
            if _denied_anonymous(resp) or resp.status_code == 403:
                failures.append(f"{route.method} {route.path} should be open: {_describe(resp)}")
        elif not _denied_anonymous(resp):
            failures.append(f"{route.method} {route.path} should be 401: {_describe(resp)}")
        if entry.level == "read" and route.method not in ("GET", "HEAD"):
            assert "read-only" in entry.note
    assert not failures, "\n".join(failures)


def test_non_api_routes_are_documented(sec: SecApp) -> None:
    for path in OTHER_ROUTES:
        if "*" in path:
            continue
        assert sec.client.get(path).status_code == 200, path


def test_security_doc_is_current() -> None:
    assert DOCS.read_text() == access_markdown(), (
        "docs/security.md is stale: run `python -m refserver.auth.access > docs/security.md`"
    )


@pytest.mark.parametrize("role", ROLES)
def test_allows_follows_the_role_order(role: str) -> None:
    for entry in ACCESS.values():
        if entry.level in ("public", "read"):
            continue
        allowed = entry.allows(role, public_read=True)
        assert allowed == (ROLES.index(role) >= ROLES.index(entry.level))
