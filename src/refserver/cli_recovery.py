"""``refserver dr drill|status|restore|check``, ``refserver offsite …``, ``refserver scheduler …``.

These are the commands DISASTER_RECOVERY.md tells a person to type, so every one
prints what happened in words and exits non-zero when protection is not what it
should be (scripts and cron jobs can rely on the exit code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from refserver.config import get_settings

dr_app = typer.Typer(help="Disaster recovery: drills, readiness, restore.", no_args_is_help=True)
offsite_app = typer.Typer(help="Offsite copies of backups.", no_args_is_help=True)
scheduler_app = typer.Typer(help="The protection schedule.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(dr_app, name="dr")
    app.add_typer(offsite_app, name="offsite")
    app.add_typer(scheduler_app, name="scheduler")


def _open(with_vectors: bool) -> Any:
    from refserver.context import AppContext
    from refserver.storage.vectors import ChromaBusy

    try:
        return AppContext(get_settings(), with_vectors=with_vectors)
    except ChromaBusy as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _print_readiness(report: dict[str, Any]) -> None:
    table = Table(title=f"Readiness {report['readiness_score']} ({report['readiness_level']})")
    for col in ("criterion", "ok", "points", "detail"):
        table.add_column(col)
    for c in report["criteria"]:
        mark = "[green]yes[/green]" if c["ok"] else "[red]no[/red]"
        table.add_row(c["name"], mark, str(c["points"]), c["detail"])
    console.print(table)
    for rec in report["recommendations"]:
        console.print(f"[yellow]→[/yellow] {rec}")


# --- dr ---------------------------------------------------------------------------------------


@dr_app.command("status")
def dr_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Readiness score, criteria and what to do to raise it."""
    from refserver.safety.readiness import assess

    ctx = _open(with_vectors=False)
    try:
        report = assess(ctx)
    finally:
        ctx.close()
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_readiness(report)


@dr_app.command("drill")
def dr_drill(
    backup_id: Annotated[
        str | None, typer.Option(help="Drill this backup (default: newest).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Restore the newest backup chain into a scratch folder and prove it works."""
    from refserver.safety.drill import run_drill

    ctx = _open(with_vectors=False)  # the drill opens only copies, in a child process
    try:
        result = run_drill(ctx, backup_id)
    finally:
        ctx.close()
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for step in result["steps"]:
            mark = "[green]ok[/green]  " if step["ok"] else "[red]FAIL[/red]"
            console.print(f"{mark} {step['name']}: {step['detail']}")
        verdict = "[green]PASSED[/green]" if result["passed"] else "[red]FAILED[/red]"
        console.print(
            f"drill {verdict} on {result.get('backup_id')} in {result['duration_seconds']:.1f}s "
            f"(recorded as check run {result['check_run_id']})"
        )
        if result.get("error"):
            console.print(f"[red]{result['error']}[/red]")
    if not result["passed"]:
        raise typer.Exit(1)


@dr_app.command("restore")
def dr_restore(
    backup_id: Annotated[str | None, typer.Argument(help="A listed backup id.")] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="The newest completed backup chain.")
    ] = False,
    at: Annotated[
        str | None, typer.Option(help="Newest state at or before this ISO time (point in time).")
    ] = None,
    no_safety_backup: Annotated[
        bool,
        typer.Option(
            "--no-safety-backup", help="Skip the safety backup of the live data (a fresh machine)."
        ),
    ] = False,
) -> None:
    """Restore into the live library (server stopped), then run a consistency check."""
    from refserver.safety.backup import BackupError, engine_of
    from refserver.safety.restore import NotFound, TargetRefused
    from refserver.safety.restore import restore as do_restore
    from refserver.safety.verify import VerificationFailed

    ctx = _open(with_vectors=True)
    try:
        engine = engine_of(ctx)
        engine.sync_records()  # backups pulled from offsite become listed
        if latest and not backup_id and not at:
            head = engine.latest_head()
            if head is None:
                console.print(
                    f"[red]no completed backup in {engine.layout.root}[/red]: pull one first "
                    "(`refserver offsite pull --target … [--key …]`)"
                )
                raise typer.Exit(1)
            backup_id = head.id
        if not backup_id and not at:
            console.print("[red]give a backup id, --latest or --at[/red]")
            raise typer.Exit(2)
        try:
            out = do_restore(engine, backup_id, at=at, force=no_safety_backup)
        except (NotFound, TargetRefused, BackupError, VerificationFailed, ValueError) as exc:
            console.print(f"[red]restore refused: {exc}[/red] (live data untouched)")
            raise typer.Exit(1) from None
        console.print(
            f"[green]restored {out['backup_id']}[/green] (chain {' → '.join(out['chain'])}, "
            f"generation {out['generation']}, {out['counts'].get('papers', 0)} papers) "
            f"in {out['duration_seconds']:.1f}s"
        )
        if out.get("safety_backup_id"):
            console.print(f"safety backup of the previous state: {out['safety_backup_id']}")
        clean = _consistency(ctx)
    finally:
        ctx.close()
    if not clean:
        raise typer.Exit(1)


def _consistency(ctx: Any) -> bool:
    """Run the consistency check and print its verdict; False when unclean or unavailable."""
    from refserver.safety.scheduler import EngineMissing, run_consistency_job

    try:
        result = run_consistency_job(ctx)
    except EngineMissing as exc:
        console.print(f"[red]consistency check not run: {exc}[/red]")
        return False
    issues = result.get("total_issues")
    if issues == 0:
        console.print("[green]consistency check: clean (0 issues)[/green]")
        return True
    console.print(
        f"[red]consistency check: {issues} issue(s)[/red] {result.get('issues_by_type') or ''} "
        "— `refserver check --fix` repairs the safe ones"
    )
    return False


@dr_app.command("check")
def dr_check(
    verify: Annotated[
        bool, typer.Option(help="Re-read and rebuild the newest backup chain (slower).")
    ] = True,
    min_score: Annotated[int, typer.Option(help="Exit 1 below this readiness score.")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check the backups: verify the newest chain and print readiness (exit 1 if not safe)."""
    from refserver.safety.backup import engine_of
    from refserver.safety.readiness import assess

    ctx = _open(with_vectors=False)
    problems: list[str] = []
    verified: dict[str, Any] | None = None
    try:
        engine = engine_of(ctx)
        head = engine.latest_head()
        if head is None:
            problems.append("no completed, verified backup")
        elif verify:
            res = engine.verify(head.id)
            verified = res.to_dict()
            if not res.ok:
                problems.append(f"newest backup {head.id} fails verification")
        report = assess(ctx)
    finally:
        ctx.close()
    score = int(report["readiness_score"].split("/")[0])
    if score < min_score:
        problems.append(f"readiness {report['readiness_score']} is below {min_score}")
    if as_json:
        print(json.dumps({"verify": verified, "readiness": report, "problems": problems}, indent=2))
    else:
        if verified is not None:
            mark = (
                "[green]passed[/green]"
                if verified["integrity_check"] == "passed"
                else "[red]failed[/red]"
            )
            console.print(f"verification of {verified['backup_id']}: {mark}")
            for c in verified["checks"]:
                if c["status"] == "failed":
                    console.print(f"  [red]{c['name']}[/red]: {c['detail']}")
        _print_readiness(report)
        for p in problems:
            console.print(f"[red]problem:[/red] {p}")
    if problems:
        raise typer.Exit(1)


# --- offsite -----------------------------------------------------------------------------------


TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        help="Folder, sftp://user@host[:port]/path or s3://bucket/prefix "
        "(default REFSERVER_OFFSITE_TARGET).",
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="Encryption key file (default REFSERVER_OFFSITE_KEY_FILE)."),
]


def _target_and_key(target: str | None, key: str | None) -> tuple[Any, Any]:
    from refserver.safety import offsite

    settings = get_settings()
    spec = target or getattr(settings, "offsite_target", None) or ""
    key_file = key or getattr(settings, "offsite_key_file", None)
    try:
        return offsite.open_target(spec, settings), (
            offsite.load_key(key_file) if key_file else None
        )
    except offsite.OffsiteError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@offsite_app.command("keygen")
def offsite_keygen(path: Path) -> None:
    """Create a new encryption key file (keep a copy OFF this machine: without it, no restore)."""
    from refserver.safety.offsite import OffsiteError, generate_key

    try:
        key = generate_key(path)
    except OffsiteError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"wrote {path} (key id {key.key_id}); set REFSERVER_OFFSITE_KEY_FILE={path}")


@offsite_app.command("push")
def offsite_push(target: TargetOpt = None, key: KeyOpt = None) -> None:
    """Copy every completed backup not yet offsite, then download and verify it."""
    from refserver.safety.offsite import OffsiteError, push_and_record

    ctx = _open(with_vectors=False)
    try:
        result = push_and_record(ctx, target, key)
    except OffsiteError as exc:
        console.print(f"[red]offsite push failed: {exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    for r in result["backups"]:
        state = "sent" if r["pushed"] else "already there"
        mark = (
            "[green]verified[/green]"
            if r["verified"]
            else f"[red]NOT verified[/red] {r['problems']}"
        )
        console.print(
            f"{r['backup_id']}: {state} ({r['objects_sent']} objects, {r['bytes_sent']} B), {mark}"
        )
    console.print(f"target: {result['target']}" + (" (encrypted)" if result["encrypted"] else ""))
    if not result["ok"]:
        raise typer.Exit(1)


@offsite_app.command("verify")
def offsite_verify(target: TargetOpt = None, key: KeyOpt = None) -> None:
    """Download every backup on the target and check every checksum."""
    from refserver.safety.offsite import OffsiteError, verify_and_record

    ctx = _open(with_vectors=False)
    try:
        result = verify_and_record(ctx, target, key)
    except OffsiteError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    for c in result["backups"]:
        mark = "[green]ok[/green]" if c["ok"] else f"[red]FAILED[/red] {c['problems']}"
        console.print(f"{c['backup_id']}: {c['checked']} object(s) {mark}")
    if not result["ok"]:
        console.print(f"[red]{result.get('error') or 'some copies failed verification'}[/red]")
        raise typer.Exit(1)


@offsite_app.command("list")
def offsite_list(target: TargetOpt = None, key: KeyOpt = None) -> None:
    """Backups on the target (encrypted ones are listed with their key only)."""
    from refserver.safety.offsite import list_remote

    tgt, k = _target_and_key(target, key)
    with tgt:
        for bid in list_remote(tgt, k):
            console.print(bid)


@offsite_app.command("prune")
def offsite_prune(
    keep_days: Annotated[float, typer.Option(help="Keep backups younger than this.")],
    target: TargetOpt = None,
    key: KeyOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed.")] = False,
) -> None:
    """Offsite retention: remove old copies (never the newest full or a kept chain's base)."""
    from refserver.safety.offsite import OffsiteError, prune_remote

    tgt, k = _target_and_key(target, key)
    try:
        with tgt:
            out = prune_remote(tgt, k, keep_days, dry_run=dry_run)
    except OffsiteError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    verb = "would remove" if dry_run else "removed"
    for bid in out["removed"]:
        console.print(f"{verb} {bid}")
    console.print(
        f"{verb} {len(out['removed'])} backup(s) and {out['objects_removed']} object(s); "
        f"kept {len(out['kept'])}"
    )


@offsite_app.command("pull")
def offsite_pull(
    target: TargetOpt = None,
    key: KeyOpt = None,
    backup_id: Annotated[
        str | None, typer.Option(help="Only this backup and the chain it needs.")
    ] = None,
    dest: Annotated[
        Path | None, typer.Option(help="Backups folder to fill (default <data_dir>/backups).")
    ] = None,
) -> None:
    """Fetch backups from the target into the backups folder (no database needed)."""
    from refserver.safety.offsite import OffsiteError, pull

    settings = get_settings()
    folder = dest or settings.backups_dir
    tgt, k = _target_and_key(target, key)
    try:
        with tgt:
            out = pull(tgt, folder, k, backup_id, progress=lambda b: console.print(f"pulled {b}"))
    except OffsiteError as exc:
        console.print(f"[red]offsite pull failed: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"[green]{len(out['pulled'])} backup(s)[/green] from {out['target']} into {folder} "
        f"({out['files_written']} file(s) written, every one checked). "
        "Next: `refserver dr restore --latest`."
    )


# --- scheduler ---------------------------------------------------------------------------------


@scheduler_app.command("list")
def scheduler_list(
    runs: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The scheduled jobs, their next run times and the recent runs."""
    from refserver.safety.scheduler import planned_jobs, recent_runs, stored_next_runs

    settings = get_settings()
    jobs = planned_jobs(settings)
    stored = stored_next_runs(settings)
    for j in jobs:
        if j["id"] in stored:
            j["next_run"] = stored[j["id"]]
    ctx = _open(with_vectors=False)
    try:
        recent = recent_runs(ctx.db, runs)
    finally:
        ctx.close()
    if as_json:
        print(
            json.dumps(
                {"timezone": settings.timezone, "jobs": jobs, "recent_runs": recent}, indent=2
            )
        )
        return
    table = Table(title=f"Schedule (time zone {settings.timezone})")
    for col in ("job", "schedule", "next run", "setting"):
        table.add_column(col)
    for j in jobs:
        table.add_row(j["id"], j["schedule"] or "(disabled)", j["next_run"] or "-", j["setting"])
    console.print(table)
    table = Table(title="Recent runs")
    for col in ("job", "start", "end", "outcome", "error"):
        table.add_column(col)
    for r in recent:
        table.add_row(
            r["job_name"], r["start"] or "", r["end"] or "", r["outcome"], (r["error"] or "")[:80]
        )
    console.print(table)


@scheduler_app.command("run")
def scheduler_run(job: str) -> None:
    """Run one scheduled job now (recorded like a scheduled run)."""
    from refserver.safety.scheduler import SPECS_BY_NAME, execute

    if job not in SPECS_BY_NAME:
        console.print(f"[red]no job {job!r}[/red]; known: {', '.join(SPECS_BY_NAME)}")
        raise typer.Exit(2)
    ctx = _open(
        with_vectors=job in ("backup_full_daily", "backup_full_weekly", "consistency_check")
    )
    try:
        detail = execute(ctx, job, trigger="manual")
    except Exception as exc:
        console.print(f"[red]{job} failed: {exc}[/red] (recorded)")
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    console.print(f"[green]{job} succeeded[/green]: {json.dumps(detail, default=str)[:400]}")
