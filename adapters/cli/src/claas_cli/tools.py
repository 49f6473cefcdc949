"""Commands that hand over to other parts: ``serve``, ``eval`` and ``models``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from claas import MissingDependency
from claas_cli.context import JsonOpt, state_of

__all__ = ["eval_", "models", "serve"]


def _import_optional(module: str, requirement: str) -> Any:
    """Import ``module``; if it (not one of its own imports) is missing, say what to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
            raise
        raise MissingDependency(f"{module} is not installed; {requirement}") from exc


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8080,
    allow_remote: Annotated[
        bool,
        typer.Option(help="Listen beyond loopback even with no API keys configured."),
    ] = False,
    log_level: Annotated[
        Literal["critical", "error", "warning", "info", "debug"],
        typer.Option(help="Server log level."),
    ] = "info",
) -> None:
    """Run the OpenAI-compatible HTTP API (needs the claas-server package)."""
    module = _import_optional(
        "claas_server.serve",
        "install the server adapter: pip install claas-server (or -e adapters/server)",
    )
    module.serve(
        state_of(ctx).settings(),
        host=host,
        port=port,
        allow_remote=allow_remote,
        log_level=log_level,
    )


def eval_(
    ctx: typer.Context,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Hydra overrides for the eval harness, e.g. preference=concise steps=8.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the eval harness (claas.eval) with Hydra overrides."""
    args = [*(overrides or []), *ctx.args]
    harness = _import_optional("claas.eval", "install the eval extra: pip install 'claas[eval]'")
    entry = getattr(harness, "main", None)
    if callable(entry):
        entry(args)
        return
    completed = subprocess.run([sys.executable, "-m", "claas.eval", *args], check=False)
    if completed.returncode:
        raise typer.Exit(completed.returncode)


def models(ctx: typer.Context, json: JsonOpt = False) -> None:
    """List the base models this installation can use (the bundled one first)."""
    from claas.models import available_models

    state = state_of(ctx, json=json)
    settings = state.settings()
    found = available_models(models_dir=settings.models_dir)
    rows: list[dict[str, Any]] = [
        {
            "name": m.name,
            "kind": m.kind,
            "available": m.available,
            "selected": m.name == settings.base_model,
            "description": m.description,
        }
        for m in found
    ]

    def human(console: Console) -> None:
        table = Table(title=f"Base models (* = selected: {escape(settings.base_model)})")
        for column in ("name", "kind", "available", "description"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                f"{'* ' if row['selected'] else '  '}{escape(row['name'])}",
                row["kind"],
                "yes" if row["available"] else "no",
                escape(row["description"]),
            )
        console.print(table)

    state.out.data(rows, human)
