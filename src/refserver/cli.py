"""The ``refserver`` command line (Typer + Rich)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from refserver.config import get_settings, settings_markdown

app = typer.Typer(
    help="RefServer: a self-hosted server for scientific-paper PDFs.", no_args_is_help=True
)
user_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
paper_app = typer.Typer(help="Inspect papers.", no_args_is_help=True)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(paper_app, name="paper")
app.add_typer(config_app, name="config")
console = Console()


def open_ctx(with_vectors: bool = True):  # noqa: ANN201
    from refserver.context import AppContext
    from refserver.storage.vectors import ChromaBusy

    try:
        return AppContext(get_settings(), with_vectors=with_vectors)
    except ChromaBusy as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (REFSERVER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (REFSERVER_PORT).")] = None,
) -> None:
    """Serve the API, run the workers and the scheduler in this one process."""
    import logging

    import uvicorn

    from refserver.api.app import create_app

    settings = get_settings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    console.print(
        f"RefServer on http://{host or settings.host}:{port or settings.port} (data: {settings.data_dir})"
    )
    # One process, one worker: it owns the embedded ChromaDB folder (DESIGN.md §4).
    uvicorn.run(
        create_app(settings), host=host or settings.host, port=port or settings.port, workers=1
    )


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="PDF files or folders (recursive).")],
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
    ocr: Annotated[bool, typer.Option(help="OCR pages without a usable text layer.")] = True,
    workers: Annotated[
        int | None, typer.Option(help="Extraction processes (default: CPU count).")
    ] = None,
) -> None:
    """Import PDFs in parallel; files already stored are skipped; rerun to resume after a crash."""
    from refserver.cli_bulk import bulk_import_cmd

    bulk_import_cmd(
        paths, workers=workers, report=report, ocr=ocr, batch_id=None, retry_failed=False
    )


@paper_app.command("show")
def paper_show(doc_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a paper's metadata and where each field came from."""
    from refserver.api.schemas import metadata_public, paper_public

    ctx = open_ctx(with_vectors=False)
    try:
        with ctx.db.read() as s:
            p = ctx.library.get(s, doc_id)
            if p is None:
                console.print(f"[red]no paper {doc_id}[/red]")
                raise typer.Exit(1)
            data = {**paper_public(p, ""), **metadata_public(p)}
    finally:
        ctx.close()
    data.pop("ocr_text", None)
    if as_json:
        print(json.dumps(data, default=str, indent=2))
        return
    table = Table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_column("source", style="dim")
    for key in (
        "doc_id",
        "title",
        "authors",
        "year",
        "journal",
        "doi",
        "abstract",
        "keywords",
        "page_count",
        "ocr_quality",
        "duplicate_of",
        "filename",
    ):
        val = data.get(key)
        val = "; ".join(val) if isinstance(val, list) else ("" if val is None else str(val))
        table.add_row(key, val[:300], str(data["field_sources"].get(key, "")))
    console.print(table)


@paper_app.command("list")
def paper_list(limit: int = 20) -> None:
    """List the newest papers."""
    from sqlalchemy import select

    from refserver.storage.models import Paper

    ctx = open_ctx(with_vectors=False)
    try:
        with ctx.db.read() as s:
            rows = (
                s.execute(select(Paper).order_by(Paper.created_at.desc()).limit(limit))
                .scalars()
                .all()
            )
    finally:
        ctx.close()
    table = Table()
    for col in ("doc_id", "year", "title", "pages"):
        table.add_column(col)
    for p in rows:
        table.add_row(p.doc_id, str(p.year or ""), (p.title or "")[:80], str(p.page_count))
    console.print(table)


@contextmanager
def accounts_ctx() -> Iterator[Any]:
    """A store-only context for account commands; a refused change exits 1 with the reason."""
    ctx = open_ctx(with_vectors=False)
    try:
        yield ctx
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        ctx.close()


@user_app.command("create")
def user_create(
    username: str,
    role: Annotated[str, typer.Option(help="reader, editor, admin or superuser")] = "reader",
    superuser: Annotated[
        bool, typer.Option("--superuser", help="Shortcut for --role superuser.")
    ] = False,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create an account."""
    role = "superuser" if superuser else role
    with accounts_ctx() as ctx:
        ctx.accounts.create(username, password, role)
        ctx.audit("user_create", username="cli", target=username, detail={"role": role})
    console.print(f"created {username}")


@user_app.command("passwd")
def user_passwd(
    username: str,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Set a user's password."""
    with accounts_ctx() as ctx:
        ctx.accounts.set_password(username, password)
        ctx.audit("user_passwd", username="cli", target=username)
    console.print(f"password of {username} changed")


@user_app.command("list")
def user_list() -> None:
    """List accounts."""
    with accounts_ctx() as ctx:
        users = ctx.accounts.list()
    table = Table()
    for col in ("username", "role", "active", "last login"):
        table.add_column(col)
    for u in users:
        table.add_row(u.username, u.role, "yes" if u.is_active else "no", str(u.last_login or ""))
    console.print(table)


@user_app.command("disable")
def user_disable(username: str) -> None:
    """Disable an account and revoke its tokens."""
    with accounts_ctx() as ctx:
        ctx.accounts.set_active(username, False)
        ctx.audit("user_disable", username="cli", target=username)
    console.print(f"disabled {username}")


@config_app.command("docs")
def config_docs(output: Annotated[Path | None, typer.Option()] = None) -> None:
    """Print (or write) the configuration reference generated from the settings class."""
    text = settings_markdown()
    if output:
        output.write_text(text)
    else:
        print(text, end="")


@config_app.command("show")
def config_show() -> None:
    """Show the effective settings (secrets hidden)."""
    s = get_settings()
    for name in type(s).model_fields:
        val = getattr(s, name)
        if name in ("secret_key", "admin_password", "llm_api_key") and val:
            val = "***"
        console.print(f"REFSERVER_{name.upper()}={val}")


def _register_optional() -> None:
    """Command groups of areas that add themselves (search, backup, check, dr...)."""
    import importlib

    for name in ("search", "backup", "consistency", "recovery", "bulk", "export"):
        try:
            module = importlib.import_module(f"refserver.cli_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"refserver.cli_{name}":
                continue
            raise
        module.register(app)


_register_optional()

if __name__ == "__main__":
    app()
