"""Replaying feedback events recorded before feedback became durable jobs.

An older claas recorded only the feedback text of an update in progress; such
an event left ``queued`` or ``running`` by a crash has no job to recover it.
It can be replayed when it names a completion; raw feedback cannot be.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

from claas.records.base import FeedbackEvent, RecordsBackend
from claas.types import FeedbackResult

__all__ = ["replay_events", "warn_resume_deprecated"]


def replay_events(
    events: Sequence[FeedbackEvent],
    records: RecordsBackend,
    replay: Callable[[FeedbackEvent], FeedbackResult],
) -> list[FeedbackResult]:
    """Replay each event with ``replay`` and close it as failed with a pointer to its replay."""
    results = []
    for event in events:
        if event.completion_id is None:
            records.update_feedback(
                event.id, status="failed", error="interrupted; raw feedback cannot be replayed"
            )
            continue
        result = replay(event)
        records.update_feedback(
            event.id, status="failed", error=f"interrupted; replayed as {result.feedback_ids[0]}"
        )
        results.append(result)
    return results


def warn_resume_deprecated() -> None:
    """Warn the caller of ``Learner.resume_interrupted`` that it is deprecated."""
    warnings.warn(
        "resume_interrupted is deprecated: interrupted feedback jobs recover on their own",
        DeprecationWarning,
        stacklevel=3,
    )
