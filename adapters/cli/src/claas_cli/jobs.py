"""``claas jobs``: list, show, wait for and cancel feedback jobs."""

from __future__ import annotations

from contextlib import closing
from typing import Annotated

import typer
from rich.console import Console

from claas.jobs import JOB_STATUSES, JobStatus
from claas_cli.context import ApiKeyOpt, JsonOpt, UrlOpt, open_client, state_of
from claas_cli.render import job_line, job_view, jobs_table

__all__ = ["app"]

app = typer.Typer(help="List, show, wait for and cancel feedback jobs.", no_args_is_help=True)

JobArg = Annotated[str, typer.Argument(help="A job id, job-...", show_default=False)]


def _status(value: str | None) -> JobStatus | None:
    """The ``--status`` option as a job status (a usage error if it is none)."""
    if value is None:
        return None
    for status in JOB_STATUSES:
        if value == status:
            return status
    raise typer.BadParameter(
        f"{value!r} is not one of {', '.join(JOB_STATUSES)}", param_hint="--status"
    )


@app.command("ls")
def list_jobs(
    ctx: typer.Context,
    adapter_id: Annotated[
        str | None, typer.Argument(help="Only this adapter, namespace/name.", show_default=False)
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(help=f"Only jobs in this state: {', '.join(JOB_STATUSES)}."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 20,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """List feedback jobs, newest first."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        found = client.jobs(adapter_id, status=_status(status), limit=limit)

    def human(console: Console) -> None:
        if not found:
            console.print("no feedback jobs")
            return
        console.print(jobs_table(found))

    state.out.data([job_view(job) for job in found], human)


@app.command("show")
def show(
    ctx: typer.Context,
    job_id: JobArg,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show one job: its state, the version it made or why it failed."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        job = client.job(job_id)
    state.out.data(job_view(job), lambda c: c.print(job_line(job)))


@app.command("wait")
def wait(
    ctx: typer.Context,
    job_id: JobArg,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Give up after this many seconds.")
    ] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Wait until a job is final (or --timeout passes), then show it."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        job = client.wait(job_id, timeout=timeout)
    state.out.data(job_view(job), lambda c: c.print(job_line(job)))


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    job_id: JobArg,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Cancel a queued job (one a worker has started cannot be)."""
    state = state_of(ctx, json=json)
    with closing(open_client(state, url, api_key)) as client:
        job = client.cancel(job_id)
    state.out.data(job_view(job), lambda c: c.print(job_line(job)))
