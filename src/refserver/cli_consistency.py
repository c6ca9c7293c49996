"""``refserver check [--fix] [--types ...] [--rebuild-index]``: the consistency checker.

Without ``--fix`` nothing is changed (dry run); ``--rebuild-index`` rebuilds the
vector index from SQLite (and, with ``--fix``, repairs the rest too). Exits 0 when the library is
clean (or every repair succeeded), 1 otherwise, so cron and scripts can act on it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()

SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}


def _types(values: list[str] | None) -> list[str] | None:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out or None


def _issue_table(issues: list[dict[str, Any]], limit: int) -> Table:
    table = Table(title="Consistency issues", show_lines=False)
    for col in ("severity", "type", "doc_id", "page", "description", "suggested fix"):
        table.add_column(col, overflow="fold")
    for i in issues[:limit]:
        style = SEVERITY_STYLE.get(i["severity"], "")
        table.add_row(
            f"[{style}]{i['severity']}[/{style}]",
            i["type"],
            i.get("doc_id") or "",
            "" if i.get("page") is None else str(i["page"]),
            i["description"],
            i["suggested_fix"],
        )
    if len(issues) > limit:
        table.caption = f"{len(issues) - limit} more not shown (use --json or --limit)"
    return table


def _fix_table(report: dict[str, Any], limit: int) -> Table:
    title = "Repairs (dry run)" if report.get("dry_run") else "Repairs"
    table = Table(title=title)
    for col in ("outcome", "type", "entry", "what"):
        table.add_column(col, overflow="fold")
    rows = [("[green]fixed[/green]", f, f.get("action", "")) for f in report["fixed"]]
    rows += [("[red]not fixed[/red]", f, f.get("reason", "")) for f in report["failed"]]
    for outcome, f, what in rows[:limit]:
        table.add_row(outcome, f["type"], f.get("entry_id") or "", what)
    table.caption = f"{report['fixed_count']} fixed, {report['failed_count']} not fixed" + (
        f" ({len(rows) - limit} rows not shown)" if len(rows) > limit else ""
    )
    if report.get("quarantine"):
        table.caption += f"; removed items kept in {report['quarantine']}"
    return table


def check_command(
    fix: Annotated[bool, typer.Option("--fix", help="Apply the safe repairs.")] = False,
    types: Annotated[
        list[str] | None,
        typer.Option("--types", help="Only these issue types (repeat or comma-separate)."),
    ] = None,
    rebuild_index: Annotated[
        bool, typer.Option("--rebuild-index", help="Rebuild the whole vector index from SQLite.")
    ] = False,
    deep: Annotated[bool, typer.Option(help="Compare the stored embeddings too.")] = False,
    hash_files: Annotated[bool, typer.Option(help="Hash every PDF (else compare sizes).")] = True,
    limit: Annotated[int, typer.Option(help="Issues shown in the table.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Check that SQLite, ChromaDB and the PDF files agree; repair the safe issues with --fix."""
    from refserver.cli import open_ctx
    from refserver.safety import consistency

    chosen = _types(types)
    ctx = open_ctx()
    try:
        try:
            if fix or rebuild_index:
                # --rebuild-index is itself a request to act; alone, it leaves every
                # issue other than the index's for a later --fix.
                scope = chosen if (fix or chosen) else list(consistency.INDEX_TYPES)
                report = consistency.fix(
                    ctx,
                    scope,
                    rebuild_index,
                    dry_run=False if rebuild_index else not fix,
                    deep=deep,
                ).to_dict()
                after = consistency.run_check(ctx, chosen, deep=deep, hash_files=hash_files)
                if as_json:
                    console.print_json(json.dumps({"fix": report, "check": after}, default=str))
                else:
                    console.print(_fix_table(report, limit))
                    _print_check(after, limit)
                ok = report["failed_count"] == 0
            else:
                result = consistency.run_check(ctx, chosen, deep=deep, hash_files=hash_files)
                if as_json:
                    console.print_json(json.dumps(result, default=str))
                else:
                    _print_check(result, limit)
                ok = result["total_issues"] == 0
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    finally:
        ctx.close()
    raise typer.Exit(0 if ok else 1)


def _print_check(result: dict[str, Any], limit: int) -> None:
    if result["issues"]:
        console.print(_issue_table(result["issues"], limit))
    by_type = Table(title="Summary")
    by_type.add_column("issue type")
    by_type.add_column("count", justify="right")
    for t, n in sorted(result["issues_by_type"].items()):
        by_type.add_row(t, str(n))
    sev = result["issues_by_severity"]
    by_type.caption = (
        f"status {result['overall_status']}: {result['total_issues']} issue(s) "
        f"(critical {sev['critical']}, high {sev['high']}, medium {sev['medium']}, "
        f"low {sev['low']}) in {result['duration_seconds']:.2f} s"
    )
    console.print(by_type)
    for rec in result["recommendations"]:
        console.print(f"- {rec}")


def register(app: typer.Typer) -> None:
    app.command("check")(check_command)
