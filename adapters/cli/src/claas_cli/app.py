"""The ``claas`` command line: wiring of the commands and the root options."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from claas_cli import adapters, chat, demo, feedback, jobs, tools, worker
from claas_cli.context import CliState
from claas_cli.output import ClaasGroup, Output

__all__ = ["app", "main"]

app = typer.Typer(
    cls=ClaasGroup,
    help="CLaaS: continual learning from text feedback.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (env CLAAS_DATA_DIR; default ~/.claas)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML settings file (env CLAAS_CONFIG)."),
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            help="Base model: bundled:smollm2-135m-instruct, a directory or a hub id "
            "(env CLAAS_BASE_MODEL).",
        ),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="Print data as JSON (also accepted per command).")
    ] = False,
) -> None:
    """CLaaS: continual learning from text feedback.

    Settings come from these options, then CLAAS_* environment variables, then
    the config file. Exit codes: 0 ok, 1 a CLaaS error, 2 a usage error.
    """
    ctx.obj = CliState(data_dir=data_dir, config=config, base_model=base_model, out=Output(json))


app.command()(demo.demo)
app.command()(chat.chat)
app.command()(feedback.feedback)
app.add_typer(adapters.app, name="adapters")
app.add_typer(jobs.app, name="jobs")
app.command()(tools.models)
app.command()(tools.serve)
app.command()(worker.worker)
app.command(
    "eval",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(tools.eval_)


def main() -> None:
    """Entry point of the ``claas`` console script."""
    # Deprecation notices between transformers and peft are for library authors,
    # not for someone running a command.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    app()
