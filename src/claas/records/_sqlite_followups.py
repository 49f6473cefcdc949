"""Follow-up links and per-adapter settings in the SQLite records file (schema version 3).

The statements are plain standard SQL (no SQLite-only syntax), so the same
tables port to PostgreSQL unchanged: ``completions.conversation_key`` indexes
each served answer for exact matching, ``followups`` links a completion to the
user's next message (one row per distinct follow-up text), and
``adapter_settings`` holds one JSON document per adapter.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence

from claas.followups import AdapterSettings, FollowUp
from claas.records._sql import adapter_filter, check_limit

__all__ = ["FOLLOWUP_MIGRATION", "SQLiteFollowupRows"]

FOLLOWUP_MIGRATION = (
    "ALTER TABLE completions ADD COLUMN conversation_key TEXT",
    "CREATE INDEX IF NOT EXISTS completions_by_key ON completions (conversation_key)",
    """CREATE TABLE IF NOT EXISTS followups (
        id TEXT PRIMARY KEY, completion_id TEXT NOT NULL, adapter_id TEXT NOT NULL,
        text TEXT NOT NULL, created REAL NOT NULL, job_id TEXT, error TEXT)""",
    "CREATE INDEX IF NOT EXISTS followups_by_completion ON followups (completion_id, created)",
    "CREATE INDEX IF NOT EXISTS followups_by_adapter ON followups (adapter_id, created)",
    """CREATE TABLE IF NOT EXISTS adapter_settings (
        adapter_id TEXT PRIMARY KEY, settings TEXT NOT NULL, updated REAL NOT NULL)""",
)
_COLUMNS = "id, completion_id, adapter_id, text, created, job_id, error"


class SQLiteFollowupRows:
    """Follow-up and adapter-settings methods of :class:`~claas.records.Records`."""

    _tx: Callable[..., contextlib.AbstractContextManager[sqlite3.Connection]]

    def match_completions(self, adapter_id: str, keys: Sequence[str]) -> dict[str, str]:
        """Completions of ``adapter_id`` recorded under these conversation keys.

        Returns:
            ``{conversation_key: completion_id}`` for the keys that match (the
            oldest completion, if the same answer was served twice).
        """
        if not keys:
            return {}
        marks = ", ".join("?" * len(keys))
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT conversation_key, id FROM completions WHERE adapter_id = ? "
                f"AND conversation_key IN ({marks}) ORDER BY created DESC",
                (adapter_id, *keys),
            ).fetchall()
        return {row[0]: row[1] for row in rows}  # oldest last, so it wins

    def add_followup(self, followup: FollowUp) -> tuple[FollowUp, bool]:
        """Record a follow-up link, or find the one with its id.

        Returns:
            The link and ``True``, or the link recorded earlier and ``False``.
        """
        with self._tx(write=True) as conn:
            # ON CONFLICT: two API servers may record the same resent follow-up at once.
            inserted = conn.execute(
                f"INSERT INTO followups ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (
                    followup.id,
                    followup.completion_id,
                    followup.adapter_id,
                    followup.text,
                    followup.created,
                    followup.job_id,
                    followup.error,
                ),
            ).rowcount
            if not inserted:
                existing = conn.execute(
                    f"SELECT {_COLUMNS} FROM followups WHERE id = ?", (followup.id,)
                ).fetchone()
                return _followup(existing), False
        return followup, True

    def set_followup_job(
        self, followup_id: str, *, job_id: str | None, error: str | None
    ) -> FollowUp:
        """Record the job a follow-up became, or why none was submitted."""
        with self._tx(write=True) as conn:
            conn.execute(
                "UPDATE followups SET job_id = ?, error = ? WHERE id = ?",
                (job_id, error, followup_id),
            )
            return _followup(
                conn.execute(
                    f"SELECT {_COLUMNS} FROM followups WHERE id = ?", (followup_id,)
                ).fetchone()
            )

    def followups(
        self,
        adapter_id: str | None = None,
        *,
        completion_id: str | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FollowUp]:
        """Follow-up links, newest first (of one adapter, one completion, these namespaces)."""
        check_limit(limit)
        where, args = adapter_filter(adapter_id, namespaces)
        if completion_id is not None:
            where = f"{where} AND completion_id = ?" if where else "WHERE completion_id = ?"
            args = (*args, completion_id)
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM followups {where} ORDER BY created DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_followup(row) for row in rows]

    def adapter_settings(self, adapter_id: str) -> AdapterSettings | None:
        """The adapter's stored settings, or ``None`` if none were stored."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT settings FROM adapter_settings WHERE adapter_id = ?", (adapter_id,)
            ).fetchone()
        return None if row is None else AdapterSettings.from_dict(json.loads(row[0]))

    def set_adapter_settings(self, adapter_id: str, settings: AdapterSettings) -> None:
        """Store the adapter's settings (replacing what was stored)."""
        document = json.dumps(settings.to_dict(), sort_keys=True)
        with self._tx(write=True) as conn:
            conn.execute(
                "INSERT INTO adapter_settings (adapter_id, settings, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (adapter_id) DO UPDATE SET settings = excluded.settings, "
                "updated = excluded.updated",
                (adapter_id, document, time.time()),
            )


def _followup(row: sqlite3.Row) -> FollowUp:
    return FollowUp(**{key: row[key] for key in _COLUMNS.split(", ")})
