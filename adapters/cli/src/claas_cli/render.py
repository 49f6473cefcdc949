"""Rich renderings of CLaaS records, shared by the commands and the REPL."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from claas_cli.client import Answer, Update, VersionInfo

__all__ = ["answer_tag", "format_time", "update_line", "versions_table"]


def format_time(created: float) -> str:
    """Local time of a Unix timestamp, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))


def versions_table(adapter_id: str, versions: Sequence[VersionInfo]) -> Table:
    """A table of versions: number (``*`` = live), parent, created, feedback, loss."""
    table = Table(title=f"{escape(adapter_id)} versions")
    for column in ("version", "parent", "created", "feedback", "loss"):
        table.add_column(column)
    for info in versions:
        loss = info.metrics.get("distill_loss", info.metrics.get("loss"))
        table.add_row(
            f"{'* ' if info.live else '  '}v{info.version}",
            "-" if info.parent is None else f"v{info.parent}",
            format_time(info.created),
            str(len(info.feedback_ids)),
            "-" if loss is None else f"{loss:.4f}",
        )
    return table


def update_line(update: Update) -> str:
    """One line (rich markup) describing a published update."""
    loss = update.metrics.get("distill_loss", update.metrics.get("loss"))
    parts = [f"{escape(update.adapter_id)}: v{update.parent_version} -> [bold]v{update.version}[/]"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if "total_seconds" in update.timings:
        parts.append(f"{update.timings['total_seconds']:.2f}s")
    return ", ".join(parts)


def answer_tag(answer: Answer) -> str:
    """``[ns/name@vN] chatcmpl-...`` (rich markup): who answered, and the id for feedback."""
    served = f"{answer.adapter_id}@v{answer.adapter_version}" if answer.adapter_id else "base"
    return f"[dim]\\[{escape(served)}] {escape(answer.id)}[/]"
