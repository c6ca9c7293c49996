"""Admin pages through FastAPI's TestClient: access rules, CSRF, forms and listings.

Papers are written straight through ``Library.add_paper`` (real SQLite, real
ChromaDB, random unit vectors) so the listing, filters, edits and deletes are
tested fast, without ingesting PDFs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from refserver.storage.library import PageInput, PaperInput
from tests.conftest import ADMIN_PASSWORD, make_settings, make_text_pdf
from tests.web.conftest import csrf_from, form_login

RNG = np.random.default_rng(7)


def unit(dim: int = 384) -> np.ndarray:
    v = RNG.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def add_paper(
    ctx: Any, title: str, *, authors: list[str], year: int | None, body: str, pages: int = 2
) -> str:
    # A real PDF in the file store, so downloads, page images and backups see a file.
    texts = [f"{body} (page {i + 1})" for i in range(pages)]
    pdf = make_text_pdf(ctx.settings.staging_dir / f"{uuid.uuid4()}.pdf", texts, title=title)
    sha = ctx.files.put(pdf)
    size = pdf.stat().st_size
    pdf.unlink()
    return ctx.library.add_paper(
        PaperInput(
            file_sha256=sha,
            file_size=size,
            filename=f"{title[:20].replace(' ', '_').lower()}.pdf",
            page_count=pages,
            pages=[
                PageInput(
                    number=i + 1,
                    text=texts[i],
                    source="ocr" if i else "text_layer",
                    quality=0.9,
                    vector=unit(),
                )
                for i in range(pages)
            ],
            metadata={"title": title, "authors": authors, "year": year, "journal": "J. Tests"},
            field_sources={"title": "pdf_text", "authors": "pdf_text", "year": "crossref"},
            paper_vector=unit(),
            model="test-model",
            model_revision="1",
        )
    )


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from refserver.api.app import create_app

    settings = make_settings(tmp_path_factory.mktemp("pages") / "data")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def seeded(app_client: TestClient) -> dict[str, str]:
    ctx = app_client.app.state.ctx
    ids = {
        "granular": add_paper(
            ctx,
            "Granular Flow in Rotating Drums",
            authors=["Ada Smith", "Bo Chen"],
            year=2019,
            body="avalanche segregation of grains",
        ),
        "beam": add_paper(
            ctx,
            "Beam Dynamics of Superconducting Cavities",
            authors=["Carla Jones"],
            year=2018,
            body="cavity tuner frequency",
        ),
        "alpha": add_paper(
            ctx,
            "Alpha Particles in Plasma",
            authors=["Dan Smith"],
            year=2021,
            body="plasma confinement",
        ),
    }
    for i in range(27):  # enough for a second page of 25
        add_paper(ctx, f"Filler Paper {i:02d}", authors=["Zed Filler"], year=2000, body="filler")
    return ids


@pytest.fixture
def admin(app_client: TestClient) -> Iterator[tuple[TestClient, str]]:
    app_client.cookies.clear()
    token = form_login(app_client)
    yield app_client, token
    app_client.cookies.clear()


def titles(html: str) -> list[str]:
    return re.findall(r'class="paper-link" href="[^"]+">([^<]+)</a>', html)


def test_admin_root_and_pages_redirect_browsers_to_login(app_client: TestClient) -> None:
    app_client.cookies.clear()
    for url in ("/admin", "/admin/"):
        r = app_client.get(url, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (302, "/admin/login")
    for url in ("/admin/dashboard", "/admin/papers", "/admin/queue", "/admin/upload"):
        r = app_client.get(url, headers={"accept": "text/html"}, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (302, "/admin/login"), url
        # API clients (no text/html) get the 401 they can act on.
        r = app_client.get(url, headers={"accept": "application/json"}, follow_redirects=False)
        assert r.status_code == 401, url


def test_signed_in_pages_render(admin: tuple[TestClient, str], seeded: dict[str, str]) -> None:
    client, _ = admin
    r = client.get("/admin/", follow_redirects=False)
    assert r.headers["location"] == "/admin/dashboard"
    dash = client.get("/admin/dashboard")
    assert dash.status_code == 200
    assert "admin" in dash.text and "superuser" in dash.text
    assert re.search(r'data-stat="papers">30<', dash.text)
    assert re.search(r'data-stat="pages">60<', dash.text)
    assert "<svg" in dash.text and "Papers added per day" in dash.text
    assert dash.headers["content-security-policy"].count("script-src 'self'") == 1
    for url, marker in (
        ("/admin/papers", "papers-table"),
        (f"/admin/papers/{seeded['beam']}", 'id="viewer"'),
        ("/admin/upload", 'id="dropzone"'),
        ("/admin/queue", 'hx-trigger="every 2s"'),
        ("/admin/queue/table", "jobs-table"),
        ("/admin/account", "Change password"),
    ):
        r = client.get(url)
        assert r.status_code == 200, url
        assert marker in r.text, url
        assert "<script>" not in r.text  # CSP: no inline scripts
    missing = client.get("/admin/papers/no-such-paper")
    assert missing.status_code == 404 and "No such paper" in missing.text


def test_paper_list_sort_filter_and_paging(
    admin: tuple[TestClient, str], seeded: dict[str, str]
) -> None:
    client, _ = admin
    first = client.get("/admin/papers")
    assert "30 papers" in first.text
    assert len(titles(first.text)) == 25 and "Page 1 of 2" in first.text
    second = client.get("/admin/papers?page=2")
    assert len(titles(second.text)) == 5
    assert not set(titles(first.text)) & set(titles(second.text))
    by_title = titles(client.get("/admin/papers?sort=title&order=asc").text)
    assert by_title[:3] == [
        "Alpha Particles in Plasma",
        "Beam Dynamics of Superconducting Cavities",
        "Filler Paper 00",
    ]
    by_year = titles(client.get("/admin/papers?sort=year&order=desc").text)
    assert by_year[:3] == [
        "Alpha Particles in Plasma",
        "Granular Flow in Rotating Drums",
        "Beam Dynamics of Superconducting Cavities",
    ]
    assert titles(client.get("/admin/papers?year=2018").text) == [
        "Beam Dynamics of Superconducting Cavities"
    ]
    assert sorted(titles(client.get("/admin/papers?author=smith").text)) == [
        "Alpha Particles in Plasma",
        "Granular Flow in Rotating Drums",
    ]
    # A search ranks the keyword match first and marks the matched words.
    found = client.get("/admin/papers", params={"q": "cavity tuner"})
    assert titles(found.text)[0] == "Beam Dynamics of Superconducting Cavities"
    assert "<mark>" in found.text
    # Hostile input is just text: no error, nothing injected.
    odd = client.get("/admin/papers", params={"q": '"<script>x</script> OR NEAR( *'})
    assert odd.status_code == 200 and "<script>x" not in odd.text


def test_csrf_is_required_for_every_form(
    admin: tuple[TestClient, str], seeded: dict[str, str]
) -> None:
    client, token = admin
    doc = seeded["alpha"]
    r = client.post(f"/admin/papers/{doc}/metadata", data={"journal": "X"})
    assert r.status_code == 403
    r = client.post(f"/admin/papers/{doc}/metadata", data={"journal": "X", "csrf_token": "nope"})
    assert r.status_code == 403
    r = client.post("/admin/account/password", data={"current_password": ADMIN_PASSWORD})
    assert r.status_code == 403
    # HTMX sends the token as a header.
    job = client.app.state.ctx.jobs.create(kind="ingest", filename="x.pdf")
    assert client.post(f"/admin/queue/{job}/cancel").status_code == 403
    r = client.post(
        f"/admin/queue/{job}/cancel", headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert r.status_code == 200 and "Job cancelled." in r.text
    assert client.app.state.ctx.jobs.get(job).status == "cancelled"


def test_metadata_edit_shows_source_and_undo_restores(
    admin: tuple[TestClient, str], seeded: dict[str, str]
) -> None:
    client, token = admin
    doc = seeded["granular"]
    page = client.get(f"/admin/papers/{doc}").text
    assert re.search(r'for="f-year">Year\s*<span class="source"[^>]*>crossref<', page)
    r = client.post(
        f"/admin/papers/{doc}/metadata",
        data={
            "csrf_token": token,
            "title": "Granular Flow in Rotating Drums",
            "year": "2020",
            "authors": "Ada Smith\nBo Chen\nCy Doe",
            "keywords": "granular, avalanche; drums",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Saved: authors, keywords, year." in page
    assert re.search(r'for="f-year">Year\s*<span class="source"[^>]*>user<', page)
    with client.app.state.ctx.db.read() as s:
        p = client.app.state.ctx.library.get(s, doc)
        assert (p.year, p.authors, p.keywords) == (
            2020,
            ["Ada Smith", "Bo Chen", "Cy Doe"],
            ["granular", "avalanche", "drums"],
        )
    edit_ids = re.findall(rf'action="/admin/papers/{doc}/undo/(\d+)"', page)
    assert len(edit_ids) == 3
    year_edit = client.get(f"/metadata/{doc}").json()["edits"]
    year_id = next(e["id"] for e in year_edit if e["field"] == "year")
    r = client.post(f"/admin/papers/{doc}/undo/{year_id}", data={"csrf_token": token})
    assert r.status_code == 200 and "Edit undone." in r.text
    with client.app.state.ctx.db.read() as s:
        p = client.app.state.ctx.library.get(s, doc)
        assert p.year == 2019 and p.field_sources["year"] == "crossref"
    # A bad year is refused with a message; nothing changes.
    r = client.post(f"/admin/papers/{doc}/metadata", data={"csrf_token": token, "year": "twenty"})
    assert "Year must be a number" in r.text
    with client.app.state.ctx.db.read() as s:
        assert client.app.state.ctx.library.get(s, doc).year == 2019
    # An undo id of another paper is not accepted.
    other = client.post(
        f"/admin/papers/{seeded['beam']}/undo/{edit_ids[0]}", data={"csrf_token": token}
    )
    assert other.status_code == 404


def test_roles_reader_cannot_change_and_only_superuser_deletes(
    app_client: TestClient, seeded: dict[str, str]
) -> None:
    ctx = app_client.app.state.ctx
    for name, role in (("rita", "reader"), ("eddie", "editor")):
        if not any(u.username == name for u in ctx.accounts.list()):
            ctx.accounts.create(name, "password-123", role)
    doc = add_paper(ctx, "Doomed Paper", authors=["X"], year=1999, body="doomed")

    app_client.cookies.clear()
    token = form_login(app_client, "rita", "password-123")
    upload = app_client.get("/admin/upload").text
    assert "needs the editor role" in upload and 'id="dropzone"' not in upload
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', upload, re.S).group(1)
    assert ">Papers<" in nav and ">Upload<" not in nav and ">Backup<" not in nav
    detail = app_client.get(f"/admin/papers/{doc}").text
    assert "readonly" in detail and "Save changes" not in detail and "Delete paper" not in detail
    r = app_client.post(f"/admin/papers/{doc}/metadata", data={"csrf_token": token, "year": "1"})
    assert r.status_code == 403

    app_client.cookies.clear()
    token = form_login(app_client, "eddie", "password-123")
    assert "Delete paper" not in app_client.get(f"/admin/papers/{doc}").text
    r = app_client.post(f"/admin/papers/{doc}/delete", data={"csrf_token": token, "confirm": "yes"})
    assert r.status_code == 403

    app_client.cookies.clear()
    token = form_login(app_client)
    r = app_client.post(f"/admin/papers/{doc}/delete", data={"csrf_token": token})
    assert "Tick the confirmation box" in r.text
    assert app_client.get(f"/admin/papers/{doc}").status_code == 200
    r = app_client.post(
        f"/admin/papers/{doc}/delete",
        data={"csrf_token": token, "confirm": "yes"},
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, "/admin/papers")
    assert app_client.get(f"/admin/papers/{doc}").status_code == 404
    assert ctx.vectors.get("papers", [doc])["ids"] == []
    app_client.cookies.clear()


def test_viewer_fragment_and_duplicate_flag(
    admin: tuple[TestClient, str], seeded: dict[str, str]
) -> None:
    client, _ = admin
    ctx = client.app.state.ctx
    doc = seeded["beam"]
    frag = client.get(f"/admin/papers/{doc}/viewer?page=2", headers={"HX-Request": "true"})
    assert frag.status_code == 200 and "<html" not in frag.text
    assert "Page 2 of 2" in frag.text and "cavity tuner frequency (page 2)" in frag.text
    assert f"/page-image/{doc}/2" in frag.text and ">OCR<" in frag.text
    assert 'id="viewer-next"' not in frag.text and 'id="viewer-prev"' in frag.text
    # Out-of-range pages clamp instead of failing.
    assert "Page 2 of 2" in client.get(f"/admin/papers/{doc}/viewer?page=99").text
    dup = add_paper(
        ctx,
        "Beam Dynamics of Superconducting Cavities",
        authors=["Carla Jones"],
        year=2018,
        body="same paper again",
    )
    page = client.get(f"/admin/papers/{dup}").text
    assert 'id="duplicate-flag"' in page and f'href="/admin/papers/{doc}"' in page
    assert f'href="/admin/papers/{dup}"' in client.get(f"/admin/papers/{doc}").text
    assert "duplicate</span>" in client.get("/admin/papers?q=superconducting").text
    ctx.library.delete_paper(dup)


def test_jobs_retry_and_filter(admin: tuple[TestClient, str]) -> None:
    client, token = admin
    ctx = client.app.state.ctx
    job = ctx.jobs.create(kind="ingest", filename="broken.pdf", priority="high")
    ctx.jobs.finish(job, "failed", error="could not read the file")
    page = client.get("/admin/queue?status=failed").text
    assert "broken.pdf" in page and "could not read the file" in page and ">Retry<" in page
    r = client.post(f"/admin/queue/{job}/retry", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert "Job queued again." in client.get("/admin/queue").text
    # A completed job cannot be retried; the answer says why.
    done = ctx.jobs.create(kind="ingest", filename="ok.pdf")
    ctx.jobs.finish(done, "completed")
    r = client.post(
        f"/admin/queue/{done}/retry", headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert "A completed job cannot be retried." in r.text
    assert client.post("/admin/queue/nope/retry", data={"csrf_token": token}).status_code == 404


def test_change_password(app_client: TestClient) -> None:
    ctx = app_client.app.state.ctx
    ctx.accounts.create("paula", "first-password", "editor")
    other_browser = TestClient(app_client.app)
    form_login(other_browser, "paula", "first-password")
    app_client.cookies.clear()
    token = form_login(app_client, "paula", "first-password")
    bad = app_client.post(
        "/admin/account/password",
        data={
            "csrf_token": token,
            "current_password": "wrong-one",
            "new_password": "second-password",
            "confirm_password": "second-password",
        },
    )
    assert bad.status_code == 400 and "current password is wrong" in bad.text
    mismatch = app_client.post(
        "/admin/account/password",
        data={
            "csrf_token": token,
            "current_password": "first-password",
            "new_password": "second-password",
            "confirm_password": "other-password",
        },
    )
    assert mismatch.status_code == 400 and "do not match" in mismatch.text
    short = app_client.post(
        "/admin/account/password",
        data={
            "csrf_token": token,
            "current_password": "first-password",
            "new_password": "short",
            "confirm_password": "short",
        },
    )
    assert short.status_code == 400 and "at least 8 characters" in short.text
    ok = app_client.post(
        "/admin/account/password",
        data={
            "csrf_token": token,
            "current_password": "first-password",
            "new_password": "second-password",
            "confirm_password": "second-password",
        },
    )
    assert ok.status_code == 200 and "Password changed." in ok.text
    assert ctx.accounts.authenticate("paula", "second-password").username == "paula"
    # This browser stays signed in; a session opened elsewhere before the change does not.
    assert app_client.get("/admin/account").status_code == 200
    r = other_browser.get("/admin/account", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.headers["location"] == "/admin/login"
    # Sign out through the form ends the session.
    r = app_client.post("/admin/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.headers["location"] == "/admin/login"
    r = app_client.get("/admin/dashboard", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.headers["location"] == "/admin/login"
    app_client.cookies.clear()


def test_csrf_token_is_per_session(app_client: TestClient) -> None:
    app_client.cookies.clear()
    first = form_login(app_client)
    app_client.cookies.clear()
    second = form_login(app_client)
    assert first != second
    assert csrf_from(app_client.get("/admin/dashboard").text) == second
    app_client.cookies.clear()


def test_builds_without_optional_areas(
    admin: tuple[TestClient, str], seeded: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the search or safety modules the pages still work and say what is missing."""
    from refserver.web import views

    real = views.optional_module
    missing = ("refserver.search", "refserver.safety.")
    monkeypatch.setattr(
        views,
        "optional_module",
        lambda name: None if name.startswith(missing) else real(name),
    )
    client, _ = admin
    # The papers search falls back to SQLite FTS5 (quoted words, ranked by BM25).
    found = client.get("/admin/papers", params={"q": "cavity tuner"})
    assert "keyword search" in found.text
    assert titles(found.text) == ["Beam Dynamics of Superconducting Cavities"]
    assert titles(client.get("/admin/papers", params={"q": 'plasma" *('}).text) == [
        "Alpha Particles in Plasma"
    ]
    detail = client.get(f"/admin/papers/{seeded['beam']}").text
    assert "Similar papers are not available in this build." in detail
    for url in ("/admin/backup", "/admin/consistency", "/admin/disaster-recovery"):
        page = client.get(url)
        assert page.status_code == 200 and "Not available in this build" in page.text, url
    dash = client.get("/admin/dashboard").text
    assert re.search(r'data-stat="readiness">—<', dash) and "(not available)" in dash
