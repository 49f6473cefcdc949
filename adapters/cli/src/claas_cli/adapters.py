"""``claas adapters``: create, list, inspect, roll back, export and delete adapters."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from claas.types import DEFAULT_TARGET_MODULES, LoraSpec
from claas_cli.context import ApiKeyOpt, JsonOpt, UrlOpt, open_client, state_of
from claas_cli.render import format_time, summary_view, version_view, versions_table

__all__ = ["app"]

app = typer.Typer(
    help="Create, list, inspect, roll back, export and delete adapters.", no_args_is_help=True
)

AdapterArg = Annotated[str, typer.Argument(help="Adapter id, namespace/name.", show_default=False)]
_LORA = LoraSpec()  # the option defaults are the core's
LearnOpt = Annotated[
    bool | None,
    typer.Option(
        "--learn-from-followups/--no-learn-from-followups",
        help="Turn the user's follow-up messages into feedback jobs (default: the server's).",
        show_default=False,
    ),
]


@app.command("init")
def init(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = _LORA.rank,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / rank).")] = _LORA.alpha,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = _LORA.dropout,
    target_module: Annotated[
        list[str] | None,
        typer.Option(help="Module to adapt (repeat); default: all attention and MLP projections."),
    ] = None,
    exist_ok: Annotated[bool, typer.Option(help="Succeed if it already exists.")] = False,
    learn_from_followups: LearnOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Create an adapter whose version 0 equals the base model."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        info = client.init_adapter(
            adapter_id,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            target_modules=tuple(target_module or DEFAULT_TARGET_MODULES),
            exist_ok=exist_ok,
            learn_from_followups=learn_from_followups,
        )
    state.out.data(
        version_view(info, live=True),
        lambda c: c.print(
            f"{escape(info.adapter_id)} v{info.version} on {escape(info.base_model)}"
        ),
    )


@app.command("ls")
def list_adapters(
    ctx: typer.Context,
    namespace: Annotated[
        str | None, typer.Argument(help="Only this namespace.", show_default=False)
    ] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """List adapters with their live version."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        found = client.adapter_summaries([namespace] if namespace else None)

    def human(console: Console) -> None:
        if not found:
            console.print("no adapters yet; create one with: claas adapters init NAMESPACE/NAME")
            return
        table = Table()
        for column in ("adapter", "live", "versions", "base model", "updated"):
            table.add_column(column)
        for item in found:
            live = item.live
            table.add_row(
                escape(item.adapter_id),
                f"v{live.version}" if live else f"[red]damaged[/]: {escape(item.error or '')}",
                str(item.versions),
                escape(live.base_model) if live else "-",
                format_time(live.created if live else None),
            )
        console.print(table)

    state.out.data([summary_view(item) for item in found], human)


@app.command("versions")
def versions(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """List an adapter's retained versions (* marks the live one)."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        found = client.versions(adapter_id)
        live = client.current_version(adapter_id).version
    state.out.data(
        [version_view(v, live=v.version == live) for v in found],
        lambda c: c.print(versions_table(adapter_id, found, live)),
    )


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    version: Annotated[int, typer.Argument(min=0, help="Version to serve again.")],
    force: Annotated[
        bool, typer.Option(help="Publish it even though the guard rejected it.")
    ] = False,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Serve an older (or newer) version again; later feedback builds on it."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        info = client.rollback(adapter_id, version, force=force)
    state.out.data(
        version_view(info, live=True),
        lambda c: c.print(f"{escape(info.adapter_id)} now serves v{info.version}"),
    )


@app.command("export")
def export(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    version: Annotated[
        int | None, typer.Option(min=0, help="Version to export; default: the live one.")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="A directory, or the .zip file to write.")
    ] = Path("."),
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write one version as a zip of its PEFT directory and manifest."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        path = client.export(adapter_id, version, out)
    state.out.data({"adapter_id": adapter_id, "path": str(path)}, lambda c: c.print(str(path)))


@app.command("rm")
def remove(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Delete an adapter and all its versions (feedback records are kept)."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        count = len(client.versions(adapter_id))
        if not yes:
            typer.confirm(f"Delete {adapter_id} and its {count} version(s)?", abort=True)
        client.delete_adapter(adapter_id)
    state.out.data(
        {"adapter_id": adapter_id, "deleted_versions": count},
        lambda c: c.print(f"deleted {escape(adapter_id)} ({count} version(s))"),
    )


@app.command("force")
def force(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    version: Annotated[int, typer.Argument(min=0, help="A version the guard rejected.")],
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Publish a version the guard rejected (its verdict records that it was forced)."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        info = client.force(adapter_id, version)
    state.out.data(
        version_view(info, live=True),
        lambda c: c.print(f"{escape(info.adapter_id)} now serves v{info.version} (forced)"),
    )


@app.command("probes")
def probes(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    add: Annotated[
        list[str] | None,
        typer.Option(
            help='Add a probe "QUESTION=ANSWER" (several answers: "Q=A1|A2"); repeat.',
            show_default=False,
        ),
    ] = None,
    clear: Annotated[bool, typer.Option(help="Remove every probe first.")] = False,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show or change the adapter's own guard probes: questions it must still answer."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        found = [] if clear else client.guard_probes(adapter_id)
        if add or clear:
            found = client.set_guard_probes(adapter_id, [*found, *map(_probe_spec, add or [])])

    def human(console: Console) -> None:
        if not found:
            console.print(f"{escape(adapter_id)} has no probes of its own")
        for probe in found:
            console.print(f"{escape(probe['prompt'])} -> {escape(' | '.join(probe['expect']))}")

    state.out.data({"adapter_id": adapter_id, "probes": found}, human)


def _probe_spec(text: str) -> dict[str, object]:
    question, sep, answers = text.rpartition("=")
    if not sep or not question.strip() or not answers.strip():
        raise typer.BadParameter(f'expected "QUESTION=ANSWER", got {text!r}', param_hint="--add")
    return {"prompt": question.strip(), "expect": [a.strip() for a in answers.split("|")]}


@app.command("configure")
def configure(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    learn_from_followups: LearnOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Change an adapter's settings (options left out keep their value) and show them."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        settings = client.configure_adapter(adapter_id, learn_from_followups=learn_from_followups)
    state.out.data(
        {"adapter_id": adapter_id, **settings.to_dict()},
        lambda c: c.print(
            f"{escape(adapter_id)}: learn_from_followups={settings.learn_from_followups}"
        ),
    )


@app.command("followups")
def followups(
    ctx: typer.Context,
    adapter_id: AdapterArg,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 20,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the follow-up messages recognised after the adapter's answers, newest first."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        found = client.followups(adapter_id, limit=limit)

    def human(console: Console) -> None:
        if not found:
            console.print("no follow-ups recorded yet")
            return
        table = Table()
        for column in ("when", "completion", "follow-up", "job"):
            table.add_column(column)
        for link in found:
            table.add_row(
                format_time(link.created),
                escape(link.completion_id),
                escape(link.text),
                _job_cell(link.job_id, link.error),
            )
        console.print(table)

    state.out.data([link.to_dict() for link in found], human)


def _job_cell(job_id: str | None, error: str | None) -> str:
    if job_id is not None:
        return escape(job_id)
    return f"[red]{escape(error)}[/]" if error else "-"
