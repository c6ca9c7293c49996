"""The admin UI in a real browser (Debian's Chromium driven by Playwright).

The flow a librarian follows: sign in, drop PDFs on the upload page and watch
them finish, find one by search, read it in the page viewer, follow the jobs
page, then the safety pages (backup, consistency, recovery) where this build
has them. Every page must render without console errors.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD, corpus_manifest, corpus_pdf, make_text_pdf
from tests.web.conftest import ConsoleLog, LiveServer, accessibility_problems, save_screenshot

pytestmark = pytest.mark.timeout(300)

JACOW = corpus_pdf("jacow_ipac2018")
JACOW_TITLE = next(e for e in corpus_manifest() if "jacow" in e["file"])["truth"]["title"]


def expect_clean(console: ConsoleLog, where: str, page: Any | None = None) -> None:
    """No console errors, and (given the page) no basic accessibility problems."""
    errors = console.take()
    assert not errors, f"console errors on {where}: {errors}"
    if page is not None:
        problems = accessibility_problems(page)
        assert not problems, f"accessibility problems on {where}: {problems}"


def sign_in(page: Any, server: LiveServer) -> None:
    page.goto(f"{server.url}/admin/dashboard")
    if "/admin/login" in page.url:
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server.url}/admin/dashboard")


def drop_files(page: Any, selector: str, files: list[tuple[str, bytes, str]]) -> None:
    """Dispatch a real drop event carrying ``files`` (what a drag from the desktop does)."""
    payload = [
        {"name": n, "type": t, "data": base64.b64encode(b).decode("ascii")} for n, b, t in files
    ]
    page.evaluate(
        """([selector, files]) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bin = atob(f.data);
                const bytes = new Uint8Array(bin.length);
                for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
                dt.items.add(new File([bytes], f.name, {type: f.type}));
            }
            const zone = document.querySelector(selector);
            zone.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt, bubbles: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
        }""",
        [selector, payload],
    )


@pytest.fixture(scope="module")
def signed_in(page: Any, live_server: LiveServer, console: ConsoleLog) -> Any:
    sign_in(page, live_server)
    return page


@pytest.fixture(scope="module")
def uploaded(
    signed_in: Any, live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Drop a corpus PDF and a non-PDF on the upload page, add a PDF via the file chooser."""
    page = signed_in
    page.goto(f"{live_server.url}/admin/upload")
    # Record every state text a row shows, to prove progress is reported step by step.
    page.evaluate(
        """() => {
            window.__states = [];
            new MutationObserver(() => {
                for (const s of document.querySelectorAll('#upload-list .state')) {
                    const name = s.parentElement.querySelector('.name').textContent;
                    window.__states.push(name + ' | ' + s.textContent);
                }
            }).observe(document.getElementById('upload-list'),
                       {subtree: true, childList: true, characterData: true});
        }"""
    )
    drop_files(
        page,
        "#dropzone",
        [
            (JACOW.name, JACOW.read_bytes(), "application/pdf"),
            ("notes.txt", b"these are not the droids you are looking for\n" * 20, "text/plain"),
        ],
    )
    synthetic = make_text_pdf(
        tmp_path_factory.mktemp("pdfs") / "granular_flow_note.pdf",
        [
            "Granular flow in rotating drums. " * 30,
            "Avalanche statistics and segregation of grains. " * 30,
        ],
        title="Granular Flow in Rotating Drums",
    )
    page.set_input_files("#file-input", str(synthetic))
    items = page.locator("#upload-list .upload-item")
    page.wait_for_function(
        "() => document.querySelectorAll('#upload-list .upload-item').length === 3"
        " && [...document.querySelectorAll('#upload-list .upload-item')]"
        ".every(li => ['completed', 'failed'].includes(li.dataset.status))",
        timeout=240_000,
    )
    rows = {
        items.nth(i).locator(".name").inner_text(): {
            "status": items.nth(i).get_attribute("data-status"),
            "state": items.nth(i).locator(".state").inner_text(),
            "job": items.nth(i).get_attribute("data-job"),
            "href": items.nth(i).locator(".state a").get_attribute("href")
            if items.nth(i).locator(".state a").count()
            else None,
        }
        for i in range(items.count())
    }
    states = sorted(set(page.evaluate("window.__states")))
    return {"rows": rows, "page": page, "states": states}


def test_login_page_and_redirects(
    browser_context: Any, live_server: LiveServer, console: ConsoleLog
) -> None:
    tab = browser_context.new_page()
    try:
        tab.on("console", lambda m: console.errors.append(m.text) if m.type == "error" else None)
        tab.goto(f"{live_server.url}/admin/")
        assert tab.url.endswith("/admin/login")
        assert not accessibility_problems(tab)
        tab.get_by_label("Username").fill("admin")
        tab.get_by_label("Password").fill("wrong-password")
        tab.get_by_role("button", name="Sign in").click()
        assert "invalid username or password" in tab.get_by_role("alert").inner_text()
        assert tab.get_by_label("Username").input_value() == "admin"
        # Keyboard only: tab from the username to the password and submit with Enter.
        tab.get_by_label("Username").focus()
        tab.keyboard.press("Tab")
        tab.keyboard.type(ADMIN_PASSWORD)
        tab.keyboard.press("Enter")
        tab.wait_for_url(f"{live_server.url}/admin/dashboard")
        assert "superuser" in tab.locator(".topbar .role").inner_text()
        # Sign out through the header button ends the session.
        tab.get_by_role("button", name="Sign out").click()
        tab.wait_for_url(f"{live_server.url}/admin/login")
        tab.goto(f"{live_server.url}/admin/papers")
        assert tab.url.endswith("/admin/login")
        # Failed sign-ins log nothing but the expected 401 of the form post.
        errors = [e for e in console.take() if "401" not in e]
        assert not errors, errors
    finally:
        tab.close()


def test_upload_shows_progress_and_per_file_errors(
    uploaded: dict[str, Any], console: ConsoleLog, screenshot_dir: Path
) -> None:
    rows = uploaded["rows"]
    assert rows[JACOW.name]["status"] == "completed", rows
    seen = [s.split(" | ", 1)[1] for s in uploaded["states"] if s.startswith(JACOW.name)]
    assert any(s.startswith("Uploading") for s in seen), seen
    # The pipeline's steps were shown as they ran, with the job's progress.
    assert any(re.match(r"Processing: [a-z ]+ · \d+%", s) for s in seen), seen
    assert "Done" in rows[JACOW.name]["state"] and "3 page(s)" in rows[JACOW.name]["state"]
    assert rows[JACOW.name]["href"].startswith("/admin/papers/")
    assert rows["granular_flow_note.pdf"]["status"] == "completed", rows
    # The non-PDF is refused by the server and its reason shown on its own row.
    assert rows["notes.txt"]["status"] == "failed"
    assert "pdf" in rows["notes.txt"]["state"].lower()
    summary = uploaded["page"].locator("#upload-summary").inner_text()
    assert "2 done" in summary and "1 failed" in summary
    save_screenshot(uploaded["page"], screenshot_dir, "upload")
    assert not accessibility_problems(uploaded["page"])
    # The 400 of the refused file is the only expected console entry.
    errors = [e for e in console.take() if "400" not in e]
    assert not errors, errors


def test_dashboard_shows_library_and_user(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog
) -> None:
    page = uploaded["page"]
    page.goto(f"{live_server.url}/admin/dashboard")
    assert page.locator("[data-stat=papers]").inner_text() == "2"
    assert int(page.locator("[data-stat=pages]").inner_text()) == 5
    assert int(page.locator("[data-stat=vectors]").inner_text()) > 0
    assert "superuser" in page.locator(".page-head").inner_text()
    assert page.locator("svg.chart").count() == 1
    assert page.get_by_role("link", name=re.compile("Tuner Testing", re.I)).count() >= 1
    expect_clean(console, "dashboard", page)


def test_search_finds_the_paper(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog, screenshot_dir: Path
) -> None:
    page = uploaded["page"]
    page.goto(f"{live_server.url}/admin/papers")
    assert page.locator("#papers-table tbody tr").count() == 2
    page.get_by_role("searchbox", name="Search").fill("cavity tuner")
    page.get_by_role("searchbox", name="Search").press("Enter")
    page.wait_for_url(re.compile(r"/admin/papers\?q=cavity"))
    links = page.locator("#papers-table a.paper-link")
    assert links.first.inner_text().lower() == JACOW_TITLE.lower()
    assert page.locator("#papers-table mark").count() > 0
    # Sorting by title through the header link keeps the query.
    page.get_by_role("link", name=re.compile("^Title")).click()
    assert "sort=title" in page.url and "q=cavity" in page.url
    save_screenshot(page, screenshot_dir, "papers")
    expect_clean(console, "papers", page)


def test_page_viewer(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog, screenshot_dir: Path
) -> None:
    page = uploaded["page"]
    page.goto(f"{live_server.url}{uploaded['rows'][JACOW.name]['href']}")
    assert page.get_by_role("heading", level=1).inner_text().lower() == JACOW_TITLE.lower()
    viewer = page.locator("#viewer")
    assert viewer.get_by_role("heading").inner_text() == "Page 1 of 3"
    img = viewer.locator("img")
    page.wait_for_function("() => document.querySelector('#viewer img').naturalWidth > 0")
    assert "Page 1" in (img.get_attribute("alt") or "")
    assert "Fermilab" in viewer.locator(".text-block").inner_text()
    viewer.get_by_role("link", name="Next →").click()
    page.wait_for_function(
        "() => document.querySelector('#viewer h2').textContent === 'Page 2 of 3'"
    )
    assert page.url.endswith("?page=2")
    page.wait_for_function("() => document.querySelector('#viewer img').naturalWidth > 0")
    # The keyboard turns pages too while the viewer has focus.
    page.locator("#viewer .text-block").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "() => document.querySelector('#viewer h2').textContent === 'Page 3 of 3'"
        " && document.querySelector('#viewer').contains(document.activeElement)"
    )
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(
        "() => document.querySelector('#viewer h2').textContent === 'Page 2 of 3'"
    )
    assert page.locator("#metadata").get_by_label(re.compile("^Title")).input_value()
    assert page.locator("#similar a").count() >= 1  # the other paper is the only neighbour
    page.locator("#viewer").scroll_into_view_if_needed()
    save_screenshot(page, screenshot_dir, "paper-detail")
    expect_clean(console, "paper detail", page)


def test_metadata_edit_and_undo_in_browser(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog
) -> None:
    page = uploaded["page"]
    page.goto(f"{live_server.url}{uploaded['rows'][JACOW.name]['href']}")
    meta = page.locator("#metadata")
    meta.get_by_label(re.compile("^Journal")).fill("Proceedings of IPAC 2018")
    meta.get_by_role("button", name="Save changes").click()
    assert "Saved: journal." in page.locator(".flashes").inner_text()
    assert page.locator("#metadata").get_by_label(re.compile("^Journal")).input_value() == (
        "Proceedings of IPAC 2018"
    )
    assert "user" in page.locator("label[for=f-journal] .source").inner_text()
    page.get_by_role("button", name="Undo the edit of journal").click()
    assert "Edit undone." in page.locator(".flashes").inner_text()
    assert (
        page.locator("#metadata").get_by_label(re.compile("^Journal")).input_value()
        != "Proceedings of IPAC 2018"
    )
    expect_clean(console, "metadata edit", page)


def test_jobs_page_is_live(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog, screenshot_dir: Path
) -> None:
    page = uploaded["page"]
    page.goto(f"{live_server.url}/admin/queue")
    rows = page.locator("#jobs-table tbody tr[data-job]")
    assert rows.count() == 2
    assert page.locator("#jobs-table tr[data-status=completed]").count() == 2
    # A job queued now (not started) shows up through the 2 s poll, then is cancelled.
    job_id = live_server.ctx.jobs.create(kind="ingest", filename="waiting.pdf", priority="low")
    row = page.locator(f"#jobs-table tr[data-job='{job_id}']")
    row.wait_for(timeout=10_000)
    assert "low" in row.inner_text()
    row.get_by_role("button", name=re.compile("^Cancel")).click()
    page.wait_for_function(
        f"() => document.querySelector(\"#jobs-table tr[data-job='{job_id}']\")"
        "?.dataset.status === 'cancelled'"
    )
    assert "Job cancelled." in page.locator("#jobs").inner_text()
    assert live_server.ctx.jobs.get(job_id).status == "cancelled"
    save_screenshot(page, screenshot_dir, "jobs")
    expect_clean(console, "jobs", page)


def test_backup_page_trigger_verify_and_history(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog, screenshot_dir: Path
) -> None:
    page = uploaded["page"]
    page.goto(f"{live_server.url}/admin/backup")
    if page.get_by_role("heading", name="Not available in this build").count():
        pytest.skip("the backup engine is not part of this build")
    page.get_by_label("Type").select_option("full")
    page.get_by_label(re.compile("^Description")).fill("before the demo")
    page.get_by_role("button", name="Start backup").click()
    flash = page.locator(".flashes").inner_text()
    assert "completed and verified" in flash, flash
    backup_id = re.search(r"Backup (\S+) completed", flash).group(1)
    row = page.locator(f"#backup-history tr[data-backup='{backup_id}']")
    assert "before the demo" in row.inner_text() and "verified" in row.inner_text()
    assert "unified" in row.inner_text()
    row.get_by_role("button", name=f"Verify backup {backup_id}").click()
    assert f"Backup {backup_id} verified" in page.locator(".flashes").inner_text()
    # Restore is offered to the superuser behind a confirmation, not run by one click.
    row = page.locator(f"#backup-history tr[data-backup='{backup_id}']")
    row.get_by_text("Restore…").click()
    assert row.get_by_label(re.compile("Yes, restore")).is_visible()
    assert row.get_by_label("Your password").is_visible()
    assert page.locator("svg.chart rect.bar").count() == 1
    assert page.locator("#schedule-table tbody tr").count() >= 1
    row.get_by_text("Restore…").click()  # close it again for the screenshot
    save_screenshot(page, screenshot_dir, "backup")
    expect_clean(console, "backup", page)


def test_consistency_page_runs_a_check(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog, screenshot_dir: Path
) -> None:
    page = uploaded["page"]
    page.goto(f"{live_server.url}/admin/consistency")
    if page.get_by_role("heading", name="Not available in this build").count():
        pytest.skip("the consistency checker is not part of this build")
    before = page.locator("#consistency-history tbody tr").count()
    page.get_by_role("button", name="Run check").click()
    flash = page.locator(".flashes").inner_text()
    assert "Check finished" in flash and "0 issue(s)" in flash, flash
    assert page.locator("#consistency-status").inner_text() == "healthy"
    assert page.locator("#consistency-issues").inner_text() == "0"
    history = page.locator("#consistency-history tbody tr")
    assert history.count() >= max(before, 1)
    assert "check" in history.first.inner_text()
    save_screenshot(page, screenshot_dir, "consistency")
    expect_clean(console, "consistency", page)


def test_disaster_recovery_readiness_and_drill(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog, screenshot_dir: Path
) -> None:
    page = uploaded["page"]
    page.goto(f"{live_server.url}/admin/disaster-recovery")
    if page.get_by_role("heading", name="Not available in this build").count():
        pytest.skip("the disaster-recovery module is not part of this build")
    score = page.locator("#readiness-score").inner_text()
    assert re.fullmatch(r"\d+/\d+", score), score
    assert page.locator("#criteria-table tbody tr").count() >= 5
    page.get_by_role("button", name="Run a drill").click()
    assert "Restore drill started" in page.locator(".flashes").inner_text()
    for _ in range(120):
        first = page.locator("#drill-history tbody tr").first.inner_text()
        if "passed" in first or "failed" in first:
            break
        page.wait_for_timeout(1000)
        page.reload()
    assert "passed" in page.locator("#drill-history tbody tr").first.inner_text()
    # A passed drill within 8 days is one of the criteria: the score reflects it.
    drill_row = page.locator("#criteria-table tr", has_text="drill")
    assert "yes" in drill_row.first.inner_text()
    save_screenshot(page, screenshot_dir, "disaster-recovery")
    expect_clean(console, "disaster recovery", page)


def test_dashboard_after_protection(
    uploaded: dict[str, Any], live_server: LiveServer, console: ConsoleLog, screenshot_dir: Path
) -> None:
    """Last: the dashboard shows the backup and readiness the tests above produced."""
    page = uploaded["page"]
    page.goto(f"{live_server.url}/admin/dashboard")
    has_backups = views_available("refserver.safety.service")
    if has_backups:
        assert page.locator("[data-stat=backup]").inner_text() != "never"
    if views_available("refserver.safety.readiness"):
        assert re.fullmatch(r"\d+/\d+", page.locator("[data-stat=readiness]").inner_text())
    save_screenshot(page, screenshot_dir, "dashboard")
    expect_clean(console, "dashboard", page)


def views_available(module: str) -> bool:
    from refserver.web.views import optional_module

    return optional_module(module) is not None


def test_accessibility_check_catches_problems(browser_context: Any) -> None:
    """The checker used above really fails on bad markup (so its passes mean something)."""
    tab = browser_context.new_page()
    try:
        tab.set_content(
            '<html><body><h1>A</h1><h1>B</h1><input name="x">'
            '<p style="color:#aaa;background:#fff">faint text</p>'
            '<img src="data:,"><button></button><i id="d"></i><i id="d"></i></body></html>'
        )
        problems = " | ".join(accessibility_problems(tab))
        for expected in (
            "form control without a label",
            "image without alt",
            "control without a name",
            "expected one h1, found 2",
            "<html> has no lang",
            "duplicate id d",
            'contrast 2.32 for "faint text"',
        ):
            assert expected in problems, (expected, problems)
    finally:
        tab.close()


def test_layout_fits_a_phone(
    uploaded: dict[str, Any], browser_context: Any, live_server: LiveServer
) -> None:
    """At 390 px wide no page scrolls sideways (tables scroll inside their card)."""
    tab = browser_context.new_page()
    try:
        tab.set_viewport_size({"width": 390, "height": 844})
        for path in (
            "/admin/dashboard",
            "/admin/papers",
            uploaded["rows"][JACOW.name]["href"],
            "/admin/upload",
            "/admin/queue",
            "/admin/backup",
            "/admin/consistency",
            "/admin/disaster-recovery",
            "/admin/account",
        ):
            tab.goto(f"{live_server.url}{path}")
            overflow = tab.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            wide = tab.evaluate(
                """() => [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                                 && !e.closest('.table-wrap'))
                    .slice(0, 5).map(e => e.tagName + '.' + e.className)"""
            )
            assert overflow <= 1, f"{path} is {overflow}px wider than a phone screen: {wide}"
    finally:
        tab.close()


def test_upload_waits_out_the_rate_limit(
    uploaded: dict[str, Any],
    live_server: LiveServer,
    console: ConsoleLog,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A 429 from /upload is not a failure: the file waits as told and goes through."""
    from refserver.auth.ratelimit import SecurityLimits, configure

    page = uploaded["page"]
    # Copies of a stored PDF: each upload is answered at once (identical file), so the
    # test measures the waiting, not ingest.
    folder = tmp_path_factory.mktemp("ratelimited")
    files = [folder / f"copy_{i}.pdf" for i in range(2)]
    for f in files:
        f.write_bytes(JACOW.read_bytes())
    configure(live_server.app, SecurityLimits(upload="1 per 3 seconds"))
    try:
        page.goto(f"{live_server.url}/admin/upload")
        page.evaluate(
            """() => { window.__busy = false;
                new MutationObserver(() => {
                    if (document.querySelector('#upload-list').textContent.includes('Server busy'))
                        window.__busy = true;
                }).observe(document.getElementById('upload-list'),
                           {subtree: true, childList: true, characterData: true}); }"""
        )
        page.set_input_files("#file-input", [str(f) for f in files])
        page.wait_for_function(
            "() => [...document.querySelectorAll('#upload-list .upload-item')]"
            ".filter(li => li.dataset.status === 'completed').length === 2",
            timeout=120_000,
        )
        assert page.evaluate("window.__busy")
        states = page.locator("#upload-list .state").all_inner_texts()
        assert all("identical file already stored" in t for t in states), states
    finally:
        configure(live_server.app, SecurityLimits())
    errors = [e for e in console.take() if "429" not in e]
    assert not errors, errors


def test_keyboard_focus_is_visible(uploaded: dict[str, Any], live_server: LiveServer) -> None:
    """Tab starts at the skip link, which jumps to the content; focus always shows."""
    page = uploaded["page"]
    page.goto(f"{live_server.url}/admin/papers")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    box = page.locator(".skip-link").bounding_box()
    assert box is not None and box["x"] >= 0  # moved on screen while focused
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
    for _ in range(4):
        page.keyboard.press("Tab")
        outline = page.evaluate(
            "() => { const s = getComputedStyle(document.activeElement);"
            " return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"
        )
        assert outline[0] != "none" and outline[1] >= 2, outline
