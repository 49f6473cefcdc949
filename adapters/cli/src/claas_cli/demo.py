"""``claas demo``: the main job, with a progress bar and a before/after table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from claas_cli.context import JsonOpt, state_of
from claas_cli.output import jsonable

if TYPE_CHECKING:
    from claas.demo import DemoReport

__all__ = ["demo"]


def demo(
    ctx: typer.Context,
    steps: Annotated[int, typer.Option(min=1, max=200, help="Feedback steps.")] = 16,
    plot: Annotated[Path, typer.Option(help="Where to write the PNG plot.")] = Path(
        "claas-demo.png"
    ),
    max_tokens: Annotated[int, typer.Option(min=1, hidden=True)] = 120,
    json: JsonOpt = False,
) -> None:
    """Watch the bundled model learn to answer concisely from text feedback."""
    from claas.demo import FEEDBACK, run_demo
    from claas.models import resolve_device
    from claas.precision import autocast_choice

    state = state_of(ctx, json=json)
    console = state.out.progress_console
    with state.learner() as learner:
        settings = learner.settings
        device = resolve_device(settings.device)
        training = autocast_choice(settings.autocast, device).describe()
        answering = autocast_choice(settings.autocast, device, purpose="inference").describe()
        checking = autocast_choice(settings.autocast, device, purpose="checks").describe()
        precision = f"training {training}, inference {answering}, guard checks {checking}"
        console.print(
            f"[bold]CLaaS demo[/] on {escape(settings.base_model)}, {device}, "
            f"{escape(precision)} (data: {escape(str(settings.data_dir))})"
        )
        console.print(f"Feedback on every training answer: [italic]{escape(repr(FEEDBACK))}[/]\n")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("loading model, baseline answers", total=steps)

            def on_event(event: str, data: dict[str, Any]) -> None:
                if event == "baseline":
                    progress.update(task, description="feedback steps")
                elif event == "step":
                    answer, result = data["answer"], data["result"]
                    head = f"step {data['step']:>2}: answer {len(answer.response_ids):>3} tokens"
                    if result is None:  # the guard kept this step's version off
                        line = f"{head} -> [red]{escape(data['verdict'])}[/]"
                    else:
                        line = (
                            f"{head} -> v{result.version}, "
                            f"loss {result.metrics['distill_loss']:.4f}, "
                            f"{result.timings['train_seconds']:.2f}s train, "
                            f"{result.timings.get('guard_seconds', 0.0):.2f}s guard: "
                            f"{escape(data['verdict'])}"
                        )
                    progress.console.print(line)
                    progress.advance(task)
                elif event == "final":
                    progress.update(task, description="final answers")

            report = run_demo(
                learner, steps=steps, plot_path=plot, max_tokens=max_tokens, progress=on_event
            )
    state.out.data(
        {
            **jsonable(report),
            "mean_before": report.mean_before,
            "mean_after": report.mean_after,
            "facts_before": report.facts_before,
            "facts_after": report.facts_after,
        },
        lambda c: _print_report(c, report),
    )


def _print_report(console: Console, report: DemoReport) -> None:
    table = Table(title="Held-out questions (greedy)")
    table.add_column("question")
    table.add_column("before")
    table.add_column("after")
    table.add_column("key fact named")
    for question, before, after, nb, na, kb, ka in zip(
        report.questions,
        report.before,
        report.after,
        report.before_tokens,
        report.after_tokens,
        report.facts_before,
        report.facts_after,
        strict=True,
    ):
        table.add_row(
            escape(question),
            f"[{nb} tok] {escape(before)}",
            f"[{na} tok] {escape(after)}",
            f"{_yes_no(kb)} -> {_yes_no(ka)}",
        )
    console.print(table)
    console.print(
        f"Key facts named: {sum(report.facts_before)} of {len(report.questions)} before, "
        f"{sum(report.facts_after)} of {len(report.questions)} after"
    )
    verdict = "passed" if report.capability_ok else "FAILED"
    console.print(
        f"Mean answer length: {report.mean_before:.0f} -> {report.mean_after:.0f} tokens "
        f"({report.change:+.0%}); capability check "
        f"{verdict}: {escape(repr(report.capability_answer))}"
    )
    console.print(
        f"Guard: {len(report.step_verdicts) - report.rejected} of {len(report.step_verdicts)} "
        f"steps went live, {report.rejected} rejected"
    )
    console.print(f"Plot: {escape(str(report.plot))}   wall time: {report.wall_seconds:.0f}s")


def _yes_no(kept: bool) -> str:
    return "yes" if kept else "[red]no[/]"
