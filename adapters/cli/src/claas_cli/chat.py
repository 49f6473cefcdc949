"""``claas chat``: one question, or an interactive session with /feedback."""

from __future__ import annotations

import importlib
import sys
from contextlib import closing, suppress
from typing import Annotated, Any

import typer
from rich.console import Console

from claas import Completion
from claas_cli.context import ApiKeyOpt, JsonOpt, UrlOpt, open_client, state_of
from claas_cli.render import answer_tag, answer_view
from claas_cli.repl import Repl

__all__ = ["chat"]


def chat(
    ctx: typer.Context,
    adapter_id: Annotated[str, typer.Argument(help="Adapter id, namespace/name.")],
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Ask one question, print the answer and exit."),
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 means greedy.")] = 0.7,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Chat with an adapter and teach it as you go (/feedback TEXT, /help)."""
    state = state_of(ctx, json=json and message is not None)
    sampling: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if seed is not None:
        sampling["seed"] = seed
    with closing(open_client(state, url, api_key)) as client:
        if message is not None:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": message})
            answer = client.chat(adapter_id, messages, **sampling)
            state.out.data(answer_view(answer), lambda c: _print_answer(c, answer))
            return
        if sys.stdin.isatty():
            # Importing readline gives input() line editing and history.
            with suppress(ImportError):
                importlib.import_module("readline")
        repl = Repl(client, adapter_id, console=state.out.console, sampling=sampling, system=system)
        repl.run()


def _print_answer(console: Console, answer: Completion) -> None:
    console.print(answer.text, markup=False, highlight=False, soft_wrap=True)
    console.print(answer_tag(answer))
