"""The records database: completions served, feedback events, version lineage.

:class:`RecordsBackend` is the protocol; :class:`Records` is the embedded
SQLite backend, the default; :class:`~claas.records.postgres.PostgresRecords`
(extra ``postgres``) is shared by many processes. :func:`open_records` picks
one from the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from claas.records.base import (
    DONE_CHANNEL,
    FINAL_STATUSES,
    JOBS_CHANNEL,
    STATUSES,
    VERSIONS_CHANNEL,
    DatabaseUnavailable,
    FeedbackEvent,
    FeedbackStatus,
    FollowupRecords,
    JobQueue,
    LineageEntry,
    NewFeedback,
    Notifications,
    RecordsBackend,
    RollbackEvent,
)
from claas.records.sqlite import SCHEMA_VERSION, Records

if TYPE_CHECKING:
    from claas.config import Settings

__all__ = [
    "DONE_CHANNEL",
    "FINAL_STATUSES",
    "JOBS_CHANNEL",
    "SCHEMA_VERSION",
    "STATUSES",
    "VERSIONS_CHANNEL",
    "DatabaseUnavailable",
    "FeedbackEvent",
    "FeedbackStatus",
    "FollowupRecords",
    "JobQueue",
    "LineageEntry",
    "NewFeedback",
    "Notifications",
    "Records",
    "RecordsBackend",
    "RollbackEvent",
    "open_records",
]


def open_records(settings: Settings) -> RecordsBackend:
    """The records backend the settings name: PostgreSQL at ``database_url``, else SQLite.

    Raises:
        MissingDependency: ``database_url`` is set and the ``postgres`` extra is missing.
        DatabaseUnavailable: The PostgreSQL database cannot be reached.
    """
    if settings.database_url is not None:
        from claas.records.postgres import PostgresRecords

        return PostgresRecords(settings.database_url)
    return Records(settings.db_path)
