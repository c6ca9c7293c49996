"""``refserver search`` and ``refserver index tune|stats|rebuild|requantize``."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

console = Console()
index_app = typer.Typer(
    help="The vector index: tune, inspect, rebuild, requantize.", no_args_is_help=True
)


def _open() -> Any:
    from refserver.cli import open_ctx
    from refserver.search.tune import apply_recorded_params

    ctx = open_ctx()
    apply_recorded_params(ctx)
    return ctx


def search(
    query: Annotated[str, typer.Argument(help="Words to search for (empty: newest papers).")] = "",
    mode: Annotated[str, typer.Option(help="keyword, semantic or hybrid.")] = "hybrid",
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    author: Annotated[str | None, typer.Option()] = None,
    title: Annotated[str | None, typer.Option()] = None,
    journal: Annotated[str | None, typer.Option()] = None,
    year_from: Annotated[int | None, typer.Option()] = None,
    year_to: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Search the library and show the results as a table."""
    from refserver.search import Filters, service

    if mode not in ("keyword", "semantic", "hybrid"):
        console.print("[red]--mode must be keyword, semantic or hybrid[/red]")
        raise typer.Exit(2)
    ctx = _open()
    try:
        out = service(ctx).search(
            query,
            mode=mode,  # type: ignore[arg-type]
            filters=Filters(
                title=title,
                author=author,
                journal=journal,
                year_from=year_from,
                year_to=year_to,
            ),
            limit=limit,
            offset=offset,
        )
    finally:
        ctx.close()
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return
    table = Table(title=f"{out['total']} matches ({out['mode']})", show_lines=True)
    table.add_column("#", style="dim", justify="right")
    table.add_column("score", justify="right")
    table.add_column("year")
    table.add_column("paper", ratio=2, overflow="fold")
    table.add_column("snippet", ratio=3, overflow="fold")
    for i, r in enumerate(out["results"], start=offset + 1):
        authors = "; ".join(r["authors"][:3]) + (" et al." if len(r["authors"]) > 3 else "")
        paper = f"[bold]{escape((r['title'] or '(untitled)')[:120])}[/bold]"
        if authors:
            paper += f"\n{escape(authors[:80])}"
        paper += f"\n[dim]{r['doc_id']}[/dim]"
        snippet = escape(html.unescape(r["snippet"][:300]))
        snippet = snippet.replace("<mark>", "[reverse]").replace("</mark>", "[/reverse]")
        table.add_row(str(i), f"{r['score']:.3f}", str(r["year"] or ""), paper, snippet)
    console.print(table)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    )


def _stage_progress(bar: Progress) -> Callable[[str, int, int], None]:
    """A ``progress(stage, done, total)`` callback drawing one bar per stage."""
    tasks: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total or 1)
        bar.update(tasks[stage], completed=done, total=total or 1)

    return progress


@index_app.command("tune")
def tune_cmd(
    target: Annotated[float, typer.Option(help="Recall@10 to reach.")] = 0.95,
    queries: Annotated[int, typer.Option(help="Sampled queries.")] = 200,
    max_build: Annotated[int, typer.Option(help="Vectors used to try each candidate.")] = 20000,
    dry_run: Annotated[bool, typer.Option(help="Measure and choose, but do not rebuild.")] = False,
) -> None:
    """Pick the cheapest HNSW parameters reaching the target recall; rebuild if they changed."""
    from refserver.search.tune import tune

    ctx = _open()
    try:
        with _progress() as bar:
            progress = _stage_progress(bar)

            out = tune(
                ctx,
                target=target,
                n_queries=queries,
                max_build=max_build,
                apply=not dry_run,
                progress=progress,
            )
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    table = Table(title=f"HNSW candidates (recall@{out['k']} on {out['evaluated_on']} vectors)")
    for col in ("M", "ef_construction", "ef_search", "recall", "build s", "ms/query"):
        table.add_column(col)
    for c in out["candidates"]:
        p = c["params"]
        table.add_row(
            str(p["max_neighbors"]),
            str(p["ef_construction"]),
            str(p["ef_search"]),
            f"{c['recall']:.3f}",
            str(c["build_s"]),
            str(c["ms_per_query"]),
        )
    console.print(table)
    b = out["before"]
    console.print(f"before: {b['params']} recall {b['recall']:.3f}")
    console.print(
        f"chosen: {out['chosen']} → recall {out['recall']:.3f} on the live collection"
        + (" (rebuilt)" if out["rebuilt"] else "")
        + (" [yellow](dry run: not applied)[/yellow]" if dry_run and not out["applied"] else "")
    )


@index_app.command("stats")
def stats_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts in SQLite and ChromaDB, HNSW parameters, memory per vector, last tuning."""
    from refserver.search.tune import index_stats

    ctx = _open()
    try:
        out = index_stats(ctx)
    finally:
        ctx.close()
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return
    table = Table(title="Vector index")
    for col in (
        "collection",
        "SQLite vectors",
        "Chroma entries",
        "M",
        "ef_construction",
        "ef_search",
    ):
        table.add_column(col)
    for name, c in out["collections"].items():
        h = c["hnsw"]
        table.add_row(
            name,
            str(c["sqlite_vectors"]),
            str(c["chroma_entries"]),
            str(h.get("max_neighbors")),
            str(h.get("ef_construction")),
            str(h.get("ef_search")),
        )
    console.print(table)
    console.print(f"bytes per vector: {out['bytes_per_vector']}")
    console.print(f"stored in SQLite: {out['sqlite_storage']}")
    last = out["last_tune"]
    if last:
        console.print(
            f"last tune {last.get('finished_at')}: {last.get('chosen')} recall {last.get('recall')}"
        )


@index_app.command("rebuild")
def rebuild_cmd(
    m: Annotated[int | None, typer.Option("--m", help="HNSW max_neighbors.")] = None,
    ef_construction: Annotated[int | None, typer.Option()] = None,
    ef_search: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Recreate the ChromaDB collections from the vectors in SQLite."""
    from refserver.search.tune import rebuild_collections

    hnsw = {
        k: v
        for k, v in (
            ("max_neighbors", m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        )
        if v is not None
    }
    ctx = _open()
    try:
        with _progress() as bar:
            progress = _stage_progress(bar)

            counts = rebuild_collections(ctx, hnsw or None, progress=progress)
    finally:
        ctx.close()
    console.print(f"rebuilt: {counts}")


@index_app.command("requantize")
def requantize_cmd(
    to: Annotated[str, typer.Option("--to", help="Target encoding: float32, float16 or int8.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm a lossy conversion (to a smaller encoding).")
    ] = False,
    batch: Annotated[int, typer.Option(min=1, help="Rows per write transaction.")] = 500,
    limit: Annotated[
        int | None,
        typer.Option(min=0, help="Convert at most this many rows; run again to resume."),
    ] = None,
) -> None:
    """Re-encode the vectors stored in SQLite, then refresh ChromaDB from them."""
    from refserver.search.requantize import (
        PRECISION,
        lossy_sources,
        requantize,
        storage_stats,
        upward_sources,
    )

    if to not in PRECISION:
        console.print("[red]--to must be float32, float16 or int8[/red]")
        raise typer.Exit(2)
    ctx = _open()
    try:
        stats = storage_stats(ctx)
        lossy = lossy_sources(stats, to)
        upward = upward_sources(stats, to)
        if lossy:
            rows = ", ".join(f"{n} {d}" for d, n in lossy.items())
            console.print(
                f"[yellow]Converting {rows} vectors to {to} is lossy: the stored values are "
                f"rounded (cosine to the original >= "
                f"{'0.9999' if to == 'int8' else '0.9999999'}) and the originals cannot be "
                "recovered from SQLite afterwards (only by re-embedding the page text).[/yellow]"
            )
            if not yes:
                console.print("Nothing changed. Run again with --yes to convert.")
                raise typer.Exit(2)
        if upward:
            rows = ", ".join(f"{n} {d}" for d, n in upward.items())
            console.print(
                f"[yellow]Note: {rows} vectors become {to} but keep their rounded values: "
                "converting up cannot restore precision, it only takes more space.[/yellow]"
            )
        if ctx.settings.vector_storage != to:
            console.print(
                f"New papers are still stored as {ctx.settings.vector_storage}; set "
                f"REFSERVER_VECTOR_STORAGE={to} to store them as {to} too."
            )
        with _progress() as bar:
            progress = _stage_progress(bar)

            out = requantize(ctx, to, batch=batch, limit=limit, progress=progress)
        ctx.audit(
            "index_requantize",
            username="cli",
            target=to,
            detail={k: out[k] for k in ("converted", "remaining", "complete", "seconds")},
        )
    finally:
        ctx.close()
    table = Table(title=f"Stored vectors (now: {to})")
    for col in ("dtype", "before", "after", "bytes before", "bytes after"):
        table.add_column(col)
    for d in sorted(set(out["before"]) | set(out["after"])):
        b, a = out["before"].get(d, {}), out["after"].get(d, {})
        table.add_row(
            d,
            str(b.get("vectors", 0)),
            str(a.get("vectors", 0)),
            str(b.get("bytes", 0)),
            str(a.get("bytes", 0)),
        )
    console.print(table)
    console.print(f"converted {out['converted']} rows in {out['seconds']} s")
    for f in out["failed"][:10]:
        console.print(f"[red]unreadable {f['chroma_id']}: {f['error']}[/red]")
    if out["complete"]:
        console.print(f"ChromaDB refreshed from SQLite: {out['chroma_refreshed']}")
        console.print(
            "[dim]SQLite reuses the freed space; the database file itself shrinks only "
            "after a VACUUM.[/dim]"
        )
    else:
        console.print(
            f"[yellow]{out['remaining']} rows are not {to} yet: run the command again to "
            "resume.[/yellow]"
        )


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.add_typer(index_app, name="index")
