"""The follow-ups section of an adapter's dashboard page."""

from __future__ import annotations

from claas_server.dashboard_html import table, td, when
from claas_server.deps import ServerState

__all__ = ["followups_section"]

_HEADERS = ("seen (UTC)", "completion", "follow-up", "job", "job state", "not learned because")


def followups_section(state: ServerState, adapter_id: str, *, limit: int = 20) -> str:
    """Whether the adapter learns from follow-ups, and the latest ones with their jobs."""
    learns = state.learner.adapter_settings(adapter_id).learn_from_followups
    rows = []
    for link in state.learner.followups(adapter_id, limit=limit):
        text = link.text if len(link.text) <= 140 else link.text[:137] + "..."
        status = state.learner.job(link.job_id).status if link.job_id else ""
        rows.append(
            [
                td(when(link.created), cls="time"),
                td(link.completion_id),
                td(text),
                td(link.job_id or ""),
                td(status, cls=f"status-{status}" if status else ""),
                td(link.error or ""),
            ]
        )
    mode = "on: each follow-up becomes a feedback job" if learns else "off: links are recorded only"
    return (
        f"<section><h2>Follow-ups</h2><p class=muted>learn_from_followups {mode}</p>"
        + table("followups", _HEADERS, rows, empty="No follow-ups recognised yet.")
        + "</section>"
    )
