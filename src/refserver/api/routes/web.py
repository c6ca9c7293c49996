"""The admin web UI: server-rendered pages under /admin (Jinja2 + vendored HTMX).

Pages call the domain code in-process; view models live in ``refserver.web.views``.
Every state change is a POST form carrying the session's CSRF token (HTMX sends it
as ``X-CSRF-Token``), answered with a redirect (or an HTMX fragment) and a flash.
Sign-in and sign-out live in ``routes/auth.py``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from refserver.api.deps import CtxDep, CurrentUser, OptionalUser, client_ip, require
from refserver.auth.csrf import get_csrf_token
from refserver.auth.users import AuthError, Principal
from refserver.web import views
from refserver.web.templating import templates

router = APIRouter(prefix="/admin", include_in_schema=False)

EditorPage = Depends(require("editor"))
SuperPage = Depends(require("superuser"))

# (key, label, href, lowest role that may open it): the bar shows what the user can use.
NAV = (
    ("dashboard", "Dashboard", "/admin/dashboard", "reader"),
    ("papers", "Papers", "/admin/papers", "reader"),
    ("upload", "Upload", "/admin/upload", "editor"),
    ("queue", "Jobs", "/admin/queue", "reader"),
    ("backup", "Backup", "/admin/backup", "admin"),
    ("consistency", "Consistency", "/admin/consistency", "admin"),
    ("recovery", "Recovery", "/admin/disaster-recovery", "admin"),
)


def flash(request: Request, message: str, kind: str = "ok") -> None:
    """A one-time message shown on the next page (Post/Redirect/Get)."""
    request.session["flash"] = [*request.session.get("flash", []), [kind, message]]


def render(
    request: Request,
    user: Principal,
    name: str,
    context: dict[str, Any],
    *,
    active: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    base = {
        "user": user,
        "csrf_token": get_csrf_token(request),
        "flashes": request.session.pop("flash", []) if "hx-request" not in request.headers else [],
        "nav": [(k, label, href) for k, label, href, role in NAV if user.can(role)],
        "active": active,
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _message(
    request: Request,
    user: Principal,
    heading: str,
    text: str,
    *,
    active: str = "",
    status_code: int = 404,
    back_href: str = "/admin/dashboard",
    back_label: str = "Back to the dashboard",
) -> HTMLResponse:
    """A page that explains a refusal or a missing object (browsers get HTML, not JSON)."""
    return render(
        request,
        user,
        "message.html",
        {"heading": heading, "text": text, "back_href": back_href, "back_label": back_label},
        active=active,
        status_code=status_code,
    )


def _no_paper(request: Request, user: Principal, doc_id: str) -> HTMLResponse:
    return _message(
        request,
        user,
        "No such paper",
        f"There is no paper {doc_id!r}: it may have been deleted.",
        active="papers",
        back_href="/admin/papers",
        back_label="Back to the papers",
    )


@router.get("", response_model=None)
@router.get("/", response_model=None)
def admin_root(user: OptionalUser) -> RedirectResponse:
    return RedirectResponse("/admin/dashboard" if user else "/admin/login", status_code=302)


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, ctx: CtxDep, user: CurrentUser) -> HTMLResponse:
    data = await run_in_threadpool(views.dashboard, ctx)
    return render(request, user, "dashboard.html", data, active="dashboard")


# --- papers ------------------------------------------------------------------------


@router.get("/papers", response_class=HTMLResponse)
async def papers(request: Request, ctx: CtxDep, user: CurrentUser) -> HTMLResponse:
    pq = views.PaperQuery.parse(dict(request.query_params))
    listing = await run_in_threadpool(views.list_papers, ctx, pq)
    return render(request, user, "papers.html", {"pq": pq, "listing": listing}, active="papers")


@router.get("/papers/{doc_id}", response_class=HTMLResponse)
async def paper(
    request: Request, doc_id: str, ctx: CtxDep, user: CurrentUser, page: int = 1
) -> HTMLResponse:
    detail = await run_in_threadpool(views.paper_detail, ctx, doc_id)
    if detail is None:
        return _no_paper(request, user, doc_id)
    viewer = await run_in_threadpool(views.page_view, ctx, doc_id, page)
    if viewer is None:  # deleted in between
        return _no_paper(request, user, doc_id)
    return render(request, user, "paper.html", {**detail, "viewer": viewer}, active="papers")


@router.get("/papers/{doc_id}/viewer", response_class=HTMLResponse)
def paper_viewer(
    request: Request, doc_id: str, ctx: CtxDep, user: CurrentUser, page: int = 1
) -> HTMLResponse:
    """The page viewer alone (HTMX swaps it in on prev/next)."""
    viewer = views.page_view(ctx, doc_id, page)
    if viewer is None:
        raise HTTPException(404, f"no paper {doc_id}")
    return render(request, user, "_viewer.html", {"viewer": viewer})


@router.post("/papers/{doc_id}/metadata", response_model=None)
async def edit_metadata(
    request: Request, doc_id: str, ctx: CtxDep, user: Principal = EditorPage
) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items() if k != "csrf_token"}
    try:
        changes = views.parse_metadata_form(form)
    except views.FormError as exc:
        flash(request, str(exc), "error")
        return back(f"/admin/papers/{doc_id}#metadata")
    changes = await run_in_threadpool(views.unchanged_removed, ctx, doc_id, changes)
    if not changes:
        flash(request, "Nothing changed.", "info")
        return back(f"/admin/papers/{doc_id}#metadata")
    paper = await run_in_threadpool(
        lambda: ctx.library.update_metadata(doc_id, changes, username=user.username)
    )
    if paper is None:
        raise HTTPException(404, f"no paper {doc_id}")
    ctx.audit(
        "edit_metadata", username=user.username, target=doc_id, detail={"fields": sorted(changes)}
    )
    flash(request, f"Saved: {', '.join(sorted(changes))}.")
    return back(f"/admin/papers/{doc_id}#metadata")


@router.post("/papers/{doc_id}/undo/{edit_id}", response_model=None)
async def undo_edit(
    request: Request, doc_id: str, edit_id: int, ctx: CtxDep, user: Principal = EditorPage
) -> Response:
    detail = await run_in_threadpool(views.paper_detail, ctx, doc_id)
    if detail is None or not any(e["id"] == edit_id for e in detail["edits"]):
        raise HTTPException(404, f"no edit {edit_id} on paper {doc_id}")
    await run_in_threadpool(lambda: ctx.library.undo_edit(edit_id, username=user.username))
    ctx.audit("undo_edit", username=user.username, target=doc_id, detail={"edit_id": edit_id})
    flash(request, "Edit undone.")
    return back(f"/admin/papers/{doc_id}#history")


@router.post("/papers/{doc_id}/delete", response_model=None)
async def delete_paper(
    request: Request, doc_id: str, ctx: CtxDep, user: Principal = SuperPage
) -> Response:
    form = await request.form()
    if form.get("confirm") != "yes":
        flash(request, "Tick the confirmation box to delete this paper.", "error")
        return back(f"/admin/papers/{doc_id}#delete")
    deleted = await run_in_threadpool(
        lambda: ctx.library.delete_paper(doc_id, username=user.username)
    )
    if not deleted:
        raise HTTPException(404, f"no paper {doc_id}")
    (ctx.settings.previews_dir / f"{doc_id}.png").unlink(missing_ok=True)
    ctx.audit("delete_paper", username=user.username, target=doc_id)
    flash(request, "Paper deleted.")
    return back("/admin/papers")


# --- upload and jobs ---------------------------------------------------------------


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, ctx: CtxDep, user: CurrentUser) -> HTMLResponse:
    return render(
        request,
        user,
        "upload.html",
        {"max_upload_mb": ctx.settings.max_upload_mb, "can_upload": user.can("editor")},
        active="upload",
    )


@router.get("/queue", response_class=HTMLResponse)
def queue_page(request: Request, ctx: CtxDep, user: CurrentUser, status: str = "") -> HTMLResponse:
    return render(
        request, user, "queue.html", views.jobs_view(ctx, _status(status)), active="queue"
    )


@router.get("/queue/table", response_class=HTMLResponse)
def queue_table(request: Request, ctx: CtxDep, user: CurrentUser, status: str = "") -> HTMLResponse:
    """The live part of the jobs page (HTMX polls it every 2 s)."""
    return render(request, user, "_jobs.html", views.jobs_view(ctx, _status(status)))


def _status(status: str) -> str | None:
    return (
        status if status in ("queued", "processing", "completed", "failed", "cancelled") else None
    )


def _after_job_action(
    request: Request, ctx: Any, user: Principal, message: str, kind: str = "ok"
) -> Response:
    """HTMX gets the refreshed table with the message in it; a plain form a redirect."""
    if "hx-request" in request.headers:
        status = _status(request.query_params.get("status", ""))
        data = {**views.jobs_view(ctx, status), "notice": (kind, message)}
        return render(request, user, "_jobs.html", data)
    flash(request, message, kind)
    return back("/admin/queue")


@router.post("/queue/{job_id}/cancel", response_model=None)
def cancel_job(
    request: Request, job_id: str, ctx: CtxDep, user: Principal = EditorPage
) -> Response:
    job = ctx.jobs.request_cancel(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    ctx.audit("cancel_job", username=user.username, target=job_id)
    message = "Job cancelled." if job.status == "cancelled" else "Cancel requested."
    if job.status in ("completed", "failed"):
        message = f"The job had already {job.status}."
    return _after_job_action(request, ctx, user, message)


@router.post("/queue/{job_id}/retry", response_model=None)
def retry_job(request: Request, job_id: str, ctx: CtxDep, user: Principal = EditorPage) -> Response:
    existing = ctx.jobs.get(job_id)
    if existing is None:
        raise HTTPException(404, f"no job {job_id}")
    job = ctx.jobs.reset_for_retry(job_id)
    if job is None:
        return _after_job_action(
            request, ctx, user, f"A {existing.status} job cannot be retried.", "error"
        )
    ctx.queue.enqueue(job_id, job.priority)
    ctx.audit("retry_job", username=user.username, target=job_id)
    return _after_job_action(request, ctx, user, "Job queued again.")


# --- account -----------------------------------------------------------------------


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, user: CurrentUser) -> HTMLResponse:
    return render(request, user, "account.html", {"error": None}, active="account")


@router.post("/account/password", response_model=None)
async def change_password(request: Request, ctx: CtxDep, user: CurrentUser) -> Response:
    form = await request.form()
    current = str(form.get("current_password") or "")
    new = str(form.get("new_password") or "")
    confirm = str(form.get("confirm_password") or "")
    error = None
    if new != confirm:
        error = "The new passwords do not match."
    else:
        try:
            await run_in_threadpool(ctx.accounts.change_password, user, current, new)
        except AuthError as exc:
            error = str(exc).capitalize() + "." if exc.locked else "The current password is wrong."
        except ValueError as exc:
            error = str(exc).capitalize() + "."
    if error is not None:
        ctx.audit("password_change_failed", username=user.username, client=client_ip(request))
        return render(
            request, user, "account.html", {"error": error}, active="account", status_code=400
        )
    # The password change signs out every other session; keep this one signed in.
    found = ctx.accounts.session_user(user.id)
    request.session["pwf"] = found[1] if found else ""
    ctx.audit("password_change", username=user.username, client=client_ip(request))
    flash(request, "Password changed.")
    return back("/admin/account")


# --- backup, consistency, disaster recovery ----------------------------------------
# Pages need an admin (as the JSON routes do); restore and fix need the superuser.
# Actions live under /admin/ui/... so they never shadow the areas' JSON routes.

AdminPage = Depends(require("admin"))


def _forbidden_page(request: Request, user: Principal, active: str, role: str) -> HTMLResponse:
    return _message(
        request,
        user,
        f"This page needs the {role} role",
        f"You are signed in as {user.username} ({user.role}). "
        "Ask an administrator if you need access.",
        active=active,
        status_code=403,
    )


@router.get("/backup", response_class=HTMLResponse)
async def backup_page(request: Request, ctx: CtxDep, user: CurrentUser) -> HTMLResponse:
    if not user.can("admin"):
        return _forbidden_page(request, user, "backup", "admin")
    data = await run_in_threadpool(views.backup_view, ctx)
    return render(request, user, "backup.html", data, active="backup")


def _safety(module: str) -> Any:
    found = views.optional_module(module)
    if found is None:
        raise HTTPException(404, "not available in this build")
    return found


@router.post("/ui/backup/trigger", response_model=None)
async def backup_trigger(request: Request, ctx: CtxDep, user: Principal = AdminPage) -> Response:
    service = _safety("refserver.safety.service")
    backup = _safety("refserver.safety.backup")
    form = await request.form()
    kind = str(form.get("backup_type") or "full")
    if kind not in ("snapshot", "full", "incremental"):
        flash(request, "Choose snapshot, full or incremental.", "error")
        return back("/admin/backup")
    retention = str(form.get("retention_days") or "").strip()
    if retention and not retention.isdigit():
        flash(request, "Retention must be a whole number of days, or empty.", "error")
        return back("/admin/backup")
    params = {
        "kind": kind,
        "compress": form.get("compress") == "true",
        "description": str(form.get("description") or "")[:500],
        "retention_days": int(retention) if retention else None,
        "unified": form.get("unified") == "true",
    }
    try:
        out = await run_in_threadpool(service.submit_backup, ctx, params, user.username)
    except backup.BackupError as exc:
        flash(request, f"Backup refused: {exc}", "error")
        return back("/admin/backup")
    if out.get("status") == "queued":
        flash(request, f"Backup {out['backup_id']} queued as a job; it appears here when done.")
    elif out.get("status") == "completed":
        flash(request, f"Backup {out['backup_id']} completed and verified.")
    else:
        flash(
            request,
            f"Backup {out['backup_id']}: {out.get('status')} {out.get('error') or ''}",
            "error",
        )
    return back("/admin/backup")


def _listed_backup_engine(ctx: Any, backup_id: str) -> Any:
    """The backup engine, after checking ``backup_id`` is a listed backup (else 404)."""
    backup = _safety("refserver.safety.backup")
    manifest = _safety("refserver.safety.manifest")
    engine = backup.engine_of(ctx)
    if not manifest.valid_id(backup_id) or not engine.exists(backup_id):
        raise HTTPException(404, f"no backup {backup_id}")
    return engine


@router.post("/ui/backup/{backup_id}/verify", response_model=None)
async def backup_verify(
    request: Request, backup_id: str, ctx: CtxDep, user: Principal = AdminPage
) -> Response:
    engine = _listed_backup_engine(ctx, backup_id)
    result = (await run_in_threadpool(engine.verify, backup_id)).to_dict()
    ctx.audit(
        "backup.verify",
        username=user.username,
        target=backup_id,
        detail={"ok": result.get("integrity_check") == "passed"},
    )
    if result.get("integrity_check") == "passed":
        flash(request, f"Backup {backup_id} verified: every check passed.")
    else:
        failed = [c.get("name", "?") for c in result.get("checks", []) if not c.get("ok", True)]
        flash(
            request,
            f"Backup {backup_id} FAILED verification: {', '.join(failed) or 'see the log'}.",
            "error",
        )
    return back("/admin/backup")


@router.post("/ui/backup/{backup_id}/restore", response_model=None)
async def backup_restore(
    request: Request, backup_id: str, ctx: CtxDep, user: Principal = SuperPage
) -> Response:
    """Restore over the live library, as a job, after the user confirmed with a password."""
    _listed_backup_engine(ctx, backup_id)  # 404 unless listed
    form = await request.form()
    if form.get("confirm") != "yes":
        flash(request, "Tick the confirmation box to restore.", "error")
        return back("/admin/backup")
    try:
        await run_in_threadpool(
            ctx.accounts.confirm_password, user, str(form.get("confirm_password") or "")
        )
    except AuthError as exc:
        ctx.audit("reauth_failed", username=user.username, target=request.url.path)
        flash(request, str(exc) if exc.locked else "Password confirmation failed.", "error")
        return back("/admin/backup")
    job_id = ctx.jobs.create(
        kind="restore",
        filename=backup_id,
        params={"backup_id": backup_id, "at": None, "target_path": None},
        created_by=user.username,
    )
    ctx.queue.enqueue(job_id, "urgent")
    ctx.audit("backup.restore", username=user.username, target=backup_id, detail={"job_id": job_id})
    flash(
        request,
        f"Restore of {backup_id} started (a safety backup is taken first). Follow it on the Jobs page.",
    )
    return back("/admin/queue")


@router.get("/consistency", response_class=HTMLResponse)
async def consistency_page(request: Request, ctx: CtxDep, user: CurrentUser) -> HTMLResponse:
    if not user.can("admin"):
        return _forbidden_page(request, user, "consistency", "admin")
    data = await run_in_threadpool(views.consistency_view, ctx)
    return render(request, user, "consistency.html", data, active="consistency")


@router.post("/ui/consistency/check", response_model=None)
async def consistency_check(request: Request, ctx: CtxDep, user: Principal = AdminPage) -> Response:
    consistency = _safety("refserver.safety.consistency")
    out = await run_in_threadpool(lambda: consistency.run_check(ctx, username=user.username))
    kind = "ok" if out["total_issues"] == 0 else "error"
    flash(
        request,
        f"Check finished in {out['duration_seconds']:.2f} s: {out['total_issues']} issue(s), "
        f"status {out['overall_status']}.",
        kind,
    )
    return back("/admin/consistency")


@router.post("/ui/consistency/fix", response_model=None)
async def consistency_fix(request: Request, ctx: CtxDep, user: Principal = SuperPage) -> Response:
    consistency = _safety("refserver.safety.consistency")
    form = await request.form()
    dry_run = form.get("dry_run") == "true"
    rebuild = form.get("rebuild_index") == "true"
    submit_job = getattr(consistency, "submit_job", None)
    if rebuild and not dry_run and submit_job is not None:
        # Re-adding every vector is long work: a job with progress (DESIGN.md §7).
        params = {"types": None, "rebuild": True, "dry_run": False}
        try:
            job_id = await run_in_threadpool(submit_job, ctx, "fix", params, user.username)
        except ValueError as exc:
            flash(request, str(exc), "error")
            return back("/admin/consistency")
        flash(request, f"Index rebuild started as job {job_id[:8]}; follow it on the Jobs page.")
        return back("/admin/consistency")
    try:
        report = await run_in_threadpool(
            lambda: consistency.fix(ctx, None, rebuild, dry_run=dry_run, username=user.username)
        )
    except ValueError as exc:
        flash(request, str(exc), "error")
        return back("/admin/consistency")
    out = report.to_dict()
    verb = "Would repair" if dry_run else "Repaired"
    flash(
        request,
        f"{verb} {out['fixed_count']} issue(s); {out['failed_count']} could not be repaired.",
        "ok" if out["failed_count"] == 0 else "error",
    )
    return back("/admin/consistency")


@router.get("/disaster-recovery", response_class=HTMLResponse)
async def recovery_page(request: Request, ctx: CtxDep, user: CurrentUser) -> HTMLResponse:
    if not user.can("admin"):
        return _forbidden_page(request, user, "recovery", "admin")
    data = await run_in_threadpool(views.recovery_view, ctx)
    return render(request, user, "recovery.html", data, active="recovery")


@router.post("/ui/disaster-recovery/drill", response_model=None)
def recovery_drill(request: Request, ctx: CtxDep, user: Principal = AdminPage) -> Response:
    """Queue a restore drill (the ``drill`` job kind of the recovery area)."""
    _safety("refserver.safety.drill")
    job_id = ctx.jobs.create(
        kind="drill", filename="restore drill", params={"backup_id": None}, created_by=user.username
    )
    ctx.queue.enqueue(job_id, "normal")
    ctx.audit("dr.drill", username=user.username, client=client_ip(request))
    flash(request, "Restore drill started; the result appears below when it finishes.")
    return back("/admin/disaster-recovery")
