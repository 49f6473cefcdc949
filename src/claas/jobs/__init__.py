"""Feedback jobs: accepted at once, applied by workers, never lost, never applied twice.

:mod:`claas.jobs.model` holds the records (:class:`FeedbackJob`, states,
limits); :mod:`claas.jobs.worker` the worker loop that claims and applies them.
The queue itself lives in the records database (:mod:`claas.records`).
"""

from claas.jobs.model import (
    FINAL_JOB_STATUSES,
    JOB_STATUSES,
    FeedbackJob,
    JobPayload,
    JobStatus,
    QueueLimits,
    check_idempotency_key,
)

__all__ = [
    "FINAL_JOB_STATUSES",
    "JOB_STATUSES",
    "FeedbackJob",
    "JobPayload",
    "JobStatus",
    "QueueLimits",
    "check_idempotency_key",
]
