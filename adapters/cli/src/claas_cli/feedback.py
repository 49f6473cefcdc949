"""``claas feedback``: turn text feedback on an answer into a new adapter version."""

from __future__ import annotations

import json as jsonlib
from contextlib import closing
from typing import Annotated, Any

import typer

from claas_cli.context import ApiKeyOpt, JsonOpt, UrlOpt, open_client, state_of
from claas_cli.render import job_line, job_view, update_line, update_view

__all__ = ["feedback", "parse_overrides"]


def parse_overrides(config_json: str | None, assignments: list[str]) -> dict[str, Any] | None:
    """DistillConfig overrides from a JSON object and ``key=value`` assignments.

    A value is read as JSON when it parses (``1e-4``, ``true``, ``[0.9, 0.99]``)
    and as a plain string otherwise (``teacher=current``). Assignments win over
    the JSON object. The keys and values are checked by ``DistillConfig``.

    Raises:
        typer.BadParameter: If the JSON is not an object or an assignment has no ``=``.
    """
    overrides: dict[str, Any] = {}
    if config_json is not None:
        try:
            loaded = jsonlib.loads(config_json)
        except jsonlib.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc.msg}", param_hint="--config-json") from exc
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--config-json")
        overrides.update(loaded)
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not key=value", param_hint="--set")
        try:
            overrides[key.strip()] = jsonlib.loads(raw)
        except jsonlib.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides or None


def feedback(
    ctx: typer.Context,
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="[COMPLETION_ID] TEXT",
            help="The completion id printed by `claas chat` and the feedback text; "
            "only TEXT with --adapter, --prompt and --response.",
            show_default=False,
        ),
    ],
    adapter: Annotated[str | None, typer.Option(help="Adapter to train (raw form).")] = None,
    prompt: Annotated[str | None, typer.Option(help="The user message (raw form).")] = None,
    response: Annotated[str | None, typer.Option(help="The answer given (raw form).")] = None,
    config_json: Annotated[
        str | None,
        typer.Option(help="Update hyperparameters as JSON, e.g. '{\"learning_rate\": 1e-4}'."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="One hyperparameter as key=value (repeatable)."),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Wait for the new version (default), or print the queued job at once.",
        ),
    ] = True,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="A key that makes a retry return the same job, never a second update."),
    ] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Learn from text feedback on one answer; returns once the new version serves.

    Either `claas feedback COMPLETION_ID TEXT`, or, for an answer CLaaS did not
    serve, `claas feedback --adapter NS/NAME --prompt P --response R TEXT`.
    With --no-wait the job is printed as soon as it is recorded; follow it with
    `claas jobs show JOB_ID` (without --url, a queued job is applied by the next
    process that opens the data directory, e.g. `claas jobs wait JOB_ID`).
    """
    state = state_of(ctx, json=json)
    config = parse_overrides(config_json, set_ or [])
    raw = prompt is not None or response is not None or adapter is not None
    if raw and (prompt is None or response is None or adapter is None or len(args) != 1):
        raise typer.BadParameter(
            "the raw form needs --adapter, --prompt, --response and exactly one TEXT",
            param_hint="[COMPLETION_ID] TEXT",
        )
    if not raw and len(args) != 2:
        raise typer.BadParameter(
            "give COMPLETION_ID and TEXT (or --adapter, --prompt and --response with TEXT)",
            param_hint="[COMPLETION_ID] TEXT",
        )
    if raw:
        assert adapter is not None and prompt is not None and response is not None
        completion_id, text = None, args[0]
        messages = [{"role": "user", "content": prompt}]
    else:
        completion_id, text, messages = args[0], args[1], None
    with closing(open_client(state, url, api_key)) as client:
        job = client.submit_feedback(
            completion_id,
            text,
            messages=messages,
            response=response,
            adapter_id=adapter,
            config=config,
            idempotency_key=idempotency_key,
        )
        if not wait:
            state.out.data(job_view(job), lambda c: c.print(job_line(job)))
            return
        update = client.result_of(client.wait(job.id))
    state.out.data(update_view(update), lambda c: c.print(update_line(update)))
