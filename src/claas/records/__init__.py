"""The records database: completions served, feedback events, version lineage.

:class:`RecordsBackend` is the protocol; :class:`Records` is the embedded
SQLite backend, the default.
"""

from claas.records.base import (
    FINAL_STATUSES,
    STATUSES,
    FeedbackEvent,
    FeedbackStatus,
    FollowupRecords,
    JobQueue,
    LineageEntry,
    NewFeedback,
    RecordsBackend,
    RollbackEvent,
)
from claas.records.sqlite import SCHEMA_VERSION, Records

__all__ = [
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "FeedbackEvent",
    "FeedbackStatus",
    "FollowupRecords",
    "JobQueue",
    "LineageEntry",
    "NewFeedback",
    "Records",
    "RecordsBackend",
    "RollbackEvent",
]
