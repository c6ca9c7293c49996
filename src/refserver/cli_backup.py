"""``refserver backup create|list|show|verify|restore|prune``.

The CLI runs in its own process. Snapshot and incremental backups need only
SQLite and the files, so they work while the server runs. A full backup copies
the ChromaDB folder and a live restore replaces it: both need to own ChromaDB,
so while the server runs they fail with a clear message (use the server's
``POST /admin/backup/trigger`` / ``/admin/backup/restore`` instead). Listing and
showing read only the manifests, so they work with the live database gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from refserver.config import get_settings

backup_app = typer.Typer(
    help="Backups: create, list, verify, restore, prune.", no_args_is_help=True
)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")


def _open(with_vectors: bool) -> Any:
    from refserver.context import AppContext
    from refserver.storage.vectors import ChromaBusy

    try:
        return AppContext(get_settings(), with_vectors=with_vectors)
    except ChromaBusy as exc:
        console.print(f"[red]{exc}[/red]")
        console.print(
            "A full backup or a live restore must own ChromaDB: ask the running server "
            "instead (POST /admin/backup/trigger or /admin/backup/restore), or stop it."
        )
        raise typer.Exit(2) from None


@contextmanager
def _bar(label: str) -> Iterator[Callable[[str, float], None]]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=100, stage="")

        def update(stage: str, fraction: float) -> None:
            progress.update(task, completed=100 * fraction, stage=stage)

        yield update


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GB"


@backup_app.command("create")
def create(
    backup_type: Annotated[
        str, typer.Option("--type", "-t", help="snapshot, full or incremental.")
    ] = "full",
    description: Annotated[str, typer.Option(help="Free text stored in the manifest.")] = "",
    retention_days: Annotated[
        int | None, typer.Option(help="Keep at least this many days.")
    ] = None,
    compress: Annotated[bool, typer.Option(help="Compress (zstd by default).")] = True,
    unified: Annotated[bool, typer.Option(help="Record it as one unified backup id.")] = False,
    compact_index: Annotated[
        bool,
        typer.Option(
            help="Before a full backup, merge the full-text index into one segment "
            "(as the scheduled full does) when over 5% of it lies outside its main "
            "segment, so the incrementals after it stay small."
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Take a backup now (verified before it is marked completed)."""
    from refserver.safety.backup import BackupError, engine_of
    from refserver.safety.service import record_public

    ctx = _open(with_vectors=backup_type == "full")
    try:
        engine = engine_of(ctx)
        if backup_type == "full" and compact_index:
            from refserver.storage.fts import compact

            with console.status("compacting the full-text index"):
                done = compact(ctx.db)
            if not as_json:
                share = f"{done.outside_share:.1%} of it outside its main segment"
                console.print(
                    f"full-text index already compact ({share}): left as it is"
                    if done.skipped
                    else f"full-text index compacted in {done.seconds:.1f}s "
                    f"({done.transactions} short transactions; {share} before)"
                )
        with _bar(f"{backup_type} backup") as update:
            m = engine.create(
                backup_type,
                compress=compress,
                description=description,
                retention_days=retention_days,
                unified=unified,
                progress=update,
            )
    except BackupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    rec = record_public(m)
    if as_json:
        console.print_json(json.dumps(rec))
    else:
        colour = "green" if m.status == "completed" else "red"
        console.print(
            f"[{colour}]{m.id}[/{colour}] {m.status} — {_size(m.size_compressed)} stored "
            f"({_size(m.size_raw)} raw) in {m.duration_seconds:.1f}s, generation {m.generation}"
        )
        if m.error:
            console.print(f"[red]{m.error}[/red]")
    if m.status != "completed":
        raise typer.Exit(1)


@backup_app.command("list")
def list_(
    backup_type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List backups from their manifests (works with the live database gone)."""
    from refserver.safety.manifest import list_manifests
    from refserver.safety.service import record_public

    manifests, bad = list_manifests(get_settings().backups_dir / "metadata")
    if backup_type:
        manifests = [m for m in manifests if m.kind == backup_type]
    if as_json:
        console.print_json(json.dumps([record_public(m) for m in reversed(manifests)]))
        return
    table = Table("id", "type", "status", "parent", "generation", "papers", "stored", "description")
    for m in reversed(manifests):
        table.add_row(
            m.id,
            m.kind,
            m.status + ("" if m.verified or m.status != "completed" else " (unverified)"),
            m.parent or "",
            str(m.generation),
            str(m.counts.get("papers", "")),
            _size(m.size_compressed),
            m.description,
        )
    console.print(table)
    for name in bad:
        console.print(f"[red]unreadable manifest: {name}[/red]")


@backup_app.command("show")
def show(backup_id: str) -> None:
    """Print one manifest."""
    from refserver.safety.manifest import ManifestError, read_manifest

    try:
        m = read_manifest(get_settings().backups_dir / "metadata", backup_id)
    except ManifestError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print_json(json.dumps(m.to_dict()))


@backup_app.command("verify")
def verify(backup_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Re-read every member, rebuild the chain in scratch, check SQLite and ChromaDB."""
    from refserver.safety.backup import engine_of
    from refserver.safety.manifest import ManifestError

    ctx = _open(with_vectors=False)
    try:
        try:
            result = engine_of(ctx).verify(backup_id)
        except ManifestError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    finally:
        ctx.close()
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        for c in result.checks:
            mark = "[green]ok[/green]" if c.ok else "[red]FAILED[/red]"
            console.print(f"{mark} {c.name} {c.detail}")
        console.print("passed" if result.ok else "[red]failed[/red]")
    if not result.ok:
        raise typer.Exit(1)


@backup_app.command("restore")
def restore(
    backup_id: Annotated[str | None, typer.Argument(help="A listed backup id.")] = None,
    at: Annotated[str | None, typer.Option(help="Newest state at or before this ISO time.")] = None,
    target: Annotated[
        str | None, typer.Option(help="Restore into this folder under <data>/restore instead.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Skip the safety backup of the live data.")] = False,
) -> None:
    """Restore a backup (verified first; a safety backup of the live data is taken)."""
    from refserver.safety.backup import BackupError, engine_of
    from refserver.safety.restore import NotFound, TargetRefused
    from refserver.safety.restore import restore as do_restore
    from refserver.safety.verify import VerificationFailed

    if not backup_id and not at:
        console.print("[red]give a backup id or --at[/red]")
        raise typer.Exit(2)
    ctx = _open(with_vectors=target is None)
    try:
        with _bar("restore") as update:
            out = do_restore(
                engine_of(ctx), backup_id, at=at, target_path=target, progress=update, force=force
            )
    except (NotFound, TargetRefused, BackupError, VerificationFailed, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    where = out.get("target_path") or "the live library"
    console.print(
        f"[green]restored {out['backup_id']}[/green] (generation {out['generation']}, "
        f"{out['counts'].get('papers', 0)} papers) into {where} in {out['duration_seconds']:.1f}s"
    )
    if out.get("safety_backup_id"):
        console.print(f"safety backup of the previous state: {out['safety_backup_id']}")


@backup_app.command("prune")
def prune(
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed.")] = False,
    keep_last: int = 7,
    keep_hourly: int = 0,
    keep_daily: int = 7,
    keep_weekly: int = 4,
    keep_monthly: int = 6,
) -> None:
    """Apply retention (restic keep-* rules, per-backup retention_days)."""
    from refserver.safety import retention
    from refserver.safety.backup import engine_of

    policy = retention.Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly)
    ctx = _open(with_vectors=False)
    try:
        plan = retention.apply(engine_of(ctx), policy, dry_run=dry_run)
    finally:
        ctx.close()
    verb = "would remove" if dry_run else "removed"
    for d in plan.removed:
        console.print(
            f"{verb} {d.backup_id} ({d.type}): {', '.join(d.reasons) or 'no rule keeps it'}"
        )
    for d in plan.kept:
        console.print(f"[dim]keep {d.backup_id}: {', '.join(d.reasons)}[/dim]")
    console.print(
        f"{verb} {len(plan.removed)} backup(s) and {len(plan.removed_files)} PDF(s), "
        f"{_size(plan.freed_bytes)}"
    )
