"""Commands that hand over to other parts: ``serve``, ``eval`` and ``models``."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from claas import MissingDependency
from claas_cli.context import CliState, JsonOpt, state_of

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
    worker: Annotated[
        bool,
        typer.Option(
            help="Apply feedback jobs in this process too; --no-worker leaves them to "
            "`claas worker` processes on the same database."
        ),
    ] = True,
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
        worker=worker,
    )


def _hydra_string(value: str) -> str:
    """A Hydra override value quoted so that any path or name survives the grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _root_overrides(state: CliState, given: list[str]) -> list[str]:
    """The root options as eval overrides, unless the command line sets the same key."""
    if state.config is not None:
        raise typer.BadParameter(
            "the eval harness has its own config; give Hydra overrides such as "
            "settings.device=cpu instead",
            param_hint="--config",
        )
    keys = {arg.split("=", 1)[0].lstrip("+~") for arg in given}
    pairs = (("data_dir", state.data_dir), ("base_model", state.base_model))
    return [
        f"{key}={_hydra_string(str(value))}"
        for key, value in pairs
        if value is not None and key not in keys
    ]


def eval_(
    ctx: typer.Context,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Hydra overrides, e.g. preference=concise steps=8 distill.learning_rate=1e-4.",
            show_default=False,
        ),
    ] = None,
    cfg: Annotated[bool, typer.Option("--cfg", help="Print the composed config and exit.")] = False,
    json: JsonOpt = False,
) -> None:
    """Teach preferences by feedback and measure the effect (the claas.eval harness).

    --data-dir and --base-model become the overrides data_dir= and base_model=.
    """
    state = state_of(ctx, json=json)
    given = [*(overrides or []), *ctx.args]
    args = [*_root_overrides(state, given), *given]
    harness = _import_optional("claas.eval", "install the eval extra: pip install 'claas[eval]'")
    if cfg:
        from omegaconf import OmegaConf

        typer.echo(OmegaConf.to_yaml(harness.compose(args)), nl=False)
        return
    from claas.eval.cli import format_table, print_progress

    stream = sys.stderr if state.out.json else sys.stdout
    result = harness.main(args, progress=print_progress(stream))
    data = {
        "output_dir": str(result.output_dir),
        "plots": [str(p) for p in result.plots],
        "summary": result.summary,
    }

    def human(console: Console) -> None:
        console.print(format_table(result.summary), markup=False, highlight=False, soft_wrap=True)
        console.print(f"records, summary and plots: {result.output_dir}", markup=False)

    state.out.data(data, human)


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
