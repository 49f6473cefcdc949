"""How CLaaS records print: rich renderings for humans, plain dicts for ``--json``.

Commands get the core's own records (from a :class:`~claas.Learner` or a
:class:`~claas.Client`), so local and remote runs print the same.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from claas import AdapterSummary, AdapterVersion, Completion, FeedbackResult
from claas.jobs import FeedbackJob

__all__ = [
    "answer_tag",
    "answer_view",
    "format_time",
    "job_line",
    "job_view",
    "jobs_table",
    "summary_view",
    "update_line",
    "update_view",
    "version_view",
    "versions_table",
]


def format_time(created: float | None) -> str:
    """Local time of a Unix timestamp, to the second (``-`` if unknown)."""
    if created is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))


def answer_view(answer: Completion) -> dict[str, Any]:
    """A served answer as ``--json`` prints it; ``id`` is what feedback refers to."""
    return {
        "id": answer.id,
        "text": answer.text,
        "adapter_id": answer.adapter_id,
        "adapter_version": answer.adapter_version,
        "finish_reason": answer.finish_reason,
    }


def version_view(version: AdapterVersion, *, live: bool) -> dict[str, Any]:
    """One version as ``--json`` prints it; ``live`` marks the one chats are served by."""
    return {
        "adapter_id": version.adapter_id,
        "version": version.version,
        "parent": version.parent,
        "created": version.created,
        "live": live,
        "base_model": version.base_model,
        "feedback_ids": list(version.feedback_ids),
        "metrics": dict(version.metrics),
        "rejected": version.rejected,
        "verdict": dict(version.verdict) if version.verdict is not None else None,
    }


def guard_cell(version: AdapterVersion) -> str:
    """The guard's word on a version: passed, rejected (with reasons) or forced live."""
    verdict = version.verdict
    if verdict is None:
        return "-"
    if verdict.get("passed"):
        return "[green]passed[/]"
    forced = " [yellow](forced live)[/]" if verdict.get("forced") else ""
    reasons = "; ".join(verdict.get("reasons") or [])
    return f"[red]rejected[/]{forced}: {escape(reasons)}"


def update_view(result: FeedbackResult) -> dict[str, Any]:
    """A published update as ``--json`` prints it."""
    return {
        "adapter_id": result.adapter_id,
        "version": result.version,
        "parent_version": result.parent_version,
        "feedback_ids": list(result.feedback_ids),
        "metrics": dict(result.metrics),
        "timings": dict(result.timings),
    }


def summary_view(summary: AdapterSummary) -> dict[str, Any]:
    """One adapter as ``adapters ls --json`` prints it (a damaged one has no live version)."""
    live = summary.live
    view: dict[str, Any] = {
        "adapter_id": summary.adapter_id,
        "live_version": live.version if live else None,
        "versions": summary.versions,
        "base_model": live.base_model if live else None,
        "updated": live.created if live else None,
    }
    if summary.error is not None:
        view["error"] = summary.error
    return view


def versions_table(adapter_id: str, versions: Sequence[AdapterVersion], live: int) -> Table:
    """A table of versions: number (``*`` = live), parent, created, feedback, loss, guard."""
    table = Table(title=f"{escape(adapter_id)} versions")
    for column in ("version", "parent", "created", "feedback", "loss", "guard"):
        table.add_column(column)
    for info in versions:
        loss = info.metrics.get("distill_loss", info.metrics.get("loss"))
        table.add_row(
            f"{'* ' if info.version == live else '  '}v{info.version}",
            "-" if info.parent is None else f"v{info.parent}",
            format_time(info.created),
            str(len(info.feedback_ids)),
            "-" if loss is None else f"{loss:.4f}",
            guard_cell(info),
        )
    return table


def update_line(update: FeedbackResult) -> str:
    """One line (rich markup) describing a published update."""
    loss = update.metrics.get("distill_loss", update.metrics.get("loss"))
    parts = [f"{escape(update.adapter_id)}: v{update.parent_version} -> [bold]v{update.version}[/]"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if "total_seconds" in update.timings:
        parts.append(f"{update.timings['total_seconds']:.2f}s")
    return ", ".join(parts)


def job_view(job: FeedbackJob) -> dict[str, Any]:
    """A feedback job as ``--json`` prints it (the fields of :class:`claas.jobs.FeedbackJob`)."""
    return {**job.to_dict(), "done": job.done}


_STATUS_STYLE = {
    "applied": "green",
    "failed": "red",
    "rejected": "red",
    "running": "yellow",
    "skipped": "cyan",
}


def _status(job: FeedbackJob) -> str:
    style = _STATUS_STYLE.get(job.status)
    return f"[{style}]{job.status}[/]" if style else job.status


def _step(job: FeedbackJob) -> str:
    if job.version is None:
        return "-"
    return f"v{job.parent_version} -> v{job.version}"


def job_line(job: FeedbackJob) -> str:
    """One line (rich markup): the job, its adapter and state, and what became of it."""
    parts = [f"{escape(job.id)} {escape(job.adapter_id)}: {_status(job)}"]
    if job.version is not None:
        parts.append(_step(job))
    if job.error:
        parts.append(escape(job.error))
    if job.status == "queued":
        parts.append(f"follow it with: claas jobs show {escape(job.id)}")
    return ", ".join(parts)


def jobs_table(jobs: Sequence[FeedbackJob]) -> Table:
    """A table of jobs: id, adapter, state, update, accepted, error (borders kept light)."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("job", no_wrap=True)  # an id to copy whole
    table.add_column("adapter", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("update", no_wrap=True)
    for column in ("accepted", "error"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            escape(job.id),
            escape(job.adapter_id),
            _status(job),
            _step(job),
            format_time(job.accepted),
            escape(job.error or ""),
        )
    return table


def answer_tag(answer: Completion) -> str:
    """``[ns/name@vN] chatcmpl-...`` (rich markup): who answered, and the id for feedback."""
    served = f"{answer.adapter_id}@v{answer.adapter_version}" if answer.adapter_id else "base"
    return f"[dim]\\[{escape(served)}] {escape(answer.id)}[/]"
