"""The ``claas`` command line (Typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from claas import ClaasError, Learner, Settings

app = typer.Typer(help="CLaaS: continual learning from text feedback.", no_args_is_help=True)
console = Console()

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (env CLAAS_DATA_DIR).")
]


@app.callback()
def root() -> None:
    """CLaaS: continual learning from text feedback."""


def _learner(data_dir: Path | None, **overrides: Any) -> Learner:
    return Learner(Settings.load(data_dir=data_dir, **overrides))


@app.command()
def demo(
    steps: Annotated[int, typer.Option(min=1, max=200, help="Feedback steps.")] = 16,
    plot: Annotated[Path, typer.Option(help="Where to write the PNG plot.")] = Path(
        "claas-demo.png"
    ),
    data_dir: DataDir = None,
) -> None:
    """Watch the bundled model learn to answer concisely from text feedback."""
    from claas.demo import FEEDBACK, run_demo

    learner = _learner(data_dir)
    console.print(f"[bold]CLaaS demo[/] on {learner.settings.base_model} (data: {learner.settings.data_dir})")
    console.print(f"Feedback on every training answer: [italic]{FEEDBACK!r}[/]\n")
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
                progress.console.print(
                    f"step {data['step']:>2}: answer {len(answer.response_ids):>3} tokens -> "
                    f"v{result.version}, loss {result.metrics['distill_loss']:.4f}, "
                    f"{result.timings['train_seconds']:.2f}s"
                )
                progress.advance(task)
            elif event == "final":
                progress.update(task, description="final answers")

        try:
            report = run_demo(learner, steps=steps, plot_path=plot, progress=on_event)
        except ClaasError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
    table = Table(title="Held-out questions (greedy)")
    table.add_column("question")
    table.add_column("before")
    table.add_column("after")
    for question, before, after, nb, na in zip(
        report.questions,
        report.before,
        report.after,
        report.before_tokens,
        report.after_tokens,
        strict=True,
    ):
        table.add_row(question, f"[{nb} tok] {before}", f"[{na} tok] {after}")
    console.print(table)
    console.print(
        f"Mean answer length: {report.mean_before:.0f} -> {report.mean_after:.0f} tokens "
        f"({report.change:+.0%}); capability check "
        f"{'passed' if report.capability_ok else 'FAILED'}: {report.capability_answer!r}"
    )
    console.print(f"Plot: {report.plot}   wall time: {report.wall_seconds:.0f}s")
    learner.close()


def main() -> None:
    """Entry point of the ``claas`` console script."""
    app()
