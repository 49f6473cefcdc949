"""The embedded records backend: one SQLite file.

One SQLite file in WAL mode (standard library ``sqlite3`` only). Every call opens
its own short-lived connection, so one :class:`Records` may be shared by any
number of threads and several processes may open the same file; writers take
``BEGIN IMMEDIATE`` and wait up to ``busy_timeout`` seconds for each other.
Lists and mappings are stored as JSON text, which round-trips ints and floats
exactly (``-inf`` logprobs included).

Tables: ``schema_version``, ``completions``, ``feedback``, ``versions`` (lineage),
``events`` (rollbacks), ``jobs`` (version 2), ``followups`` and ``adapter_settings``
(version 3). A feedback event moves ``queued -> running ->
applied | failed``; ``applied`` and ``failed`` are final.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from claas.errors import (
    CompletionNotFound,
    Conflict,
    InvalidRequest,
    NotFound,
    StorageError,
)
from claas.followups import conversation_key
from claas.records._sql import DuplicateKey, adapter_filter, check_limit
from claas.records._sqlite_followups import FOLLOWUP_MIGRATION, SQLiteFollowupRows
from claas.records._sqlite_jobs import JOB_MIGRATION, SQLiteJobRows
from claas.records.base import (
    FINAL_STATUSES,
    STATUSES,
    VERSIONS_CHANNEL,
    FeedbackEvent,
    FeedbackStatus,
    LineageEntry,
    RollbackEvent,
)
from claas.types import AdapterVersion, ChatMessage, Completion

__all__ = ["SCHEMA_VERSION", "Records"]

SCHEMA_VERSION = 3
# Statements that take a database from the version before each key to that version.
_MIGRATIONS: dict[int, tuple[str, ...]] = {2: JOB_MIGRATION, 3: FOLLOWUP_MIGRATION}
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS completions (
        id TEXT PRIMARY KEY, adapter_id TEXT, adapter_version INTEGER, model TEXT NOT NULL,
        messages TEXT NOT NULL, prompt_ids TEXT NOT NULL, response_ids TEXT NOT NULL,
        response_logprobs TEXT NOT NULL, text TEXT NOT NULL, raw_text TEXT NOT NULL,
        finish_reason TEXT NOT NULL, created REAL NOT NULL, top_logprobs TEXT NOT NULL,
        thinking INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS completions_by_adapter ON completions (adapter_id, created)",
    """CREATE TABLE IF NOT EXISTS feedback (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        adapter_id TEXT NOT NULL, completion_id TEXT, text TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'applied', 'failed')),
        parent_version INTEGER, version INTEGER, error TEXT, metrics TEXT NOT NULL,
        timings TEXT NOT NULL, created REAL NOT NULL, finished REAL)""",
    "CREATE INDEX IF NOT EXISTS feedback_by_adapter ON feedback (adapter_id, created)",
    "CREATE INDEX IF NOT EXISTS feedback_by_status ON feedback (status, created)",
    """CREATE TABLE IF NOT EXISTS versions (
        adapter_id TEXT NOT NULL, version INTEGER NOT NULL, parent INTEGER,
        created REAL NOT NULL, feedback_ids TEXT NOT NULL, metrics TEXT NOT NULL,
        PRIMARY KEY (adapter_id, version))""",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, adapter_id TEXT NOT NULL, kind TEXT NOT NULL,
        data TEXT NOT NULL, created REAL NOT NULL)""",
)
_COMPLETION_COLUMNS = (
    "id, adapter_id, adapter_version, model, messages, prompt_ids, response_ids, "
    "response_logprobs, text, raw_text, finish_reason, created, top_logprobs, thinking, "
    "conversation_key"
)
_FEEDBACK_COLUMNS = (
    "id, adapter_id, completion_id, text, status, parent_version, version, error, "
    "metrics, timings, created, finished"
)


class Records(SQLiteJobRows, SQLiteFollowupRows):
    """The records database in one SQLite file.

    Args:
        db_path: The database file; its parent directory is created if missing.
        busy_timeout: Seconds a call waits for another writer before failing.

    Raises:
        StorageError: If the file cannot be opened or was written by a newer
            schema version.
    """

    def __init__(self, db_path: Path, *, busy_timeout: float = 30.0) -> None:
        self.db_path = Path(db_path)
        self.busy_timeout = busy_timeout
        self._closed = False
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._init_schema()

    def __repr__(self) -> str:
        return f"Records({str(self.db_path)!r})"

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop using the database; later calls raise :class:`StorageError`."""
        self._closed = True

    # ------------------------------------------------------------ completions

    def add_completion(self, completion: Completion) -> None:
        """Record a served completion.

        Raises:
            Conflict: If a completion with this id is already recorded.
        """
        c = completion
        row = (
            c.id,
            c.adapter_id,
            c.adapter_version,
            c.model,
            _dumps([m.to_dict() for m in c.messages]),
            _dumps(list(c.prompt_ids)),
            _dumps(list(c.response_ids)),
            _dumps(list(c.response_logprobs)),
            c.text,
            c.raw_text,
            c.finish_reason,
            c.created,
            _dumps([[list(pair) for pair in position] for position in c.top_logprobs]),
            int(c.thinking),
            None if c.adapter_id is None else conversation_key(c.adapter_id, c.messages, c.text),
        )
        try:
            with self._tx(write=True) as conn:
                conn.execute(
                    f"INSERT INTO completions ({_COMPLETION_COLUMNS}) "
                    f"VALUES ({', '.join('?' * len(row))})",
                    row,
                )
        except DuplicateKey:
            raise Conflict(f"completion {c.id!r} is already recorded") from None

    def get_completion(self, completion_id: str) -> Completion:
        """Return a recorded completion exactly as it was added.

        Raises:
            CompletionNotFound: If no completion has this id.
        """
        with self._tx() as conn:
            row = conn.execute(
                "SELECT * FROM completions WHERE id = ?", (completion_id,)
            ).fetchone()
        if row is None:
            raise CompletionNotFound(f"no completion with id {completion_id!r} is recorded")
        return Completion(
            id=row["id"],
            adapter_id=row["adapter_id"],
            adapter_version=row["adapter_version"],
            model=row["model"],
            messages=tuple(ChatMessage(**m) for m in json.loads(row["messages"])),
            prompt_ids=tuple(json.loads(row["prompt_ids"])),
            response_ids=tuple(json.loads(row["response_ids"])),
            response_logprobs=tuple(json.loads(row["response_logprobs"])),
            text=row["text"],
            raw_text=row["raw_text"],
            finish_reason=row["finish_reason"],
            created=row["created"],
            top_logprobs=tuple(
                tuple(tuple(pair) for pair in position)
                for position in json.loads(row["top_logprobs"])
            ),
            thinking=bool(row["thinking"]),
        )

    # --------------------------------------------------------------- feedback

    def add_feedback(
        self,
        *,
        feedback_id: str,
        adapter_id: str,
        completion_id: str | None,
        text: str,
        created: float | None = None,
    ) -> FeedbackEvent:
        """Record feedback as ``queued``.

        Raises:
            Conflict: If feedback with this id is already recorded.
        """
        event = FeedbackEvent(
            id=feedback_id,
            adapter_id=adapter_id,
            completion_id=completion_id,
            text=text,
            status="queued",
            created=time.time() if created is None else created,
        )
        try:
            with self._tx(write=True) as conn:
                conn.execute(
                    "INSERT INTO feedback (id, adapter_id, completion_id, text, status, "
                    "metrics, timings, created) VALUES (?, ?, ?, ?, 'queued', '{}', '{}', ?)",
                    (feedback_id, adapter_id, completion_id, text, event.created),
                )
        except DuplicateKey:
            raise Conflict(f"feedback {feedback_id!r} is already recorded") from None
        return event

    def update_feedback(
        self,
        feedback_id: str,
        *,
        status: FeedbackStatus,
        version: int | None = None,
        parent_version: int | None = None,
        error: str | None = None,
        metrics: Mapping[str, float] | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> FeedbackEvent:
        """Move feedback to ``status``; fields left ``None`` keep their value.

        ``queued`` and ``running`` may move to any status; ``applied`` and
        ``failed`` are final (re-stating the same final status is allowed, to
        add metrics). Reaching a final status sets ``finished``.

        Returns:
            The updated event.

        Raises:
            InvalidRequest: If ``status`` is not a known status.
            NotFound: If no feedback has this id.
            Conflict: If the event already reached a different final status.
        """
        if status not in STATUSES:
            raise InvalidRequest(f"feedback status {status!r} is not one of {STATUSES}")
        with self._tx(write=True) as conn:
            old = self._feedback_row(conn, feedback_id, self._FOR_UPDATE)
            if old.done and status != old.status:
                raise Conflict(f"feedback {feedback_id!r} is {old.status}, cannot become {status}")
            new = attrs.evolve(
                old,
                status=status,
                version=old.version if version is None else version,
                parent_version=old.parent_version if parent_version is None else parent_version,
                error=old.error if error is None else error,
                metrics=old.metrics if metrics is None else dict(metrics),
                timings=old.timings if timings is None else dict(timings),
                finished=time.time()
                if status in FINAL_STATUSES and old.finished is None
                else old.finished,
            )
            conn.execute(
                "UPDATE feedback SET status = ?, version = ?, parent_version = ?, error = ?, "
                "metrics = ?, timings = ?, finished = ? WHERE id = ?",
                (
                    new.status,
                    new.version,
                    new.parent_version,
                    new.error,
                    _dumps(dict(new.metrics)),
                    _dumps(dict(new.timings)),
                    new.finished,
                    feedback_id,
                ),
            )
        return new

    def get_feedback(self, feedback_id: str) -> FeedbackEvent:
        """Return one feedback event.

        Raises:
            NotFound: If no feedback has this id.
        """
        with self._tx() as conn:
            return self._feedback_row(conn, feedback_id)

    def feedback_events(
        self,
        adapter_id: str | None = None,
        *,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackEvent]:
        """Return the newest feedback events first.

        Args:
            adapter_id: Only this adapter's events.
            namespaces: Only events of adapters in these namespaces (``None``: all).
            limit: At most this many events.
        """
        check_limit(limit)
        where, args = adapter_filter(adapter_id, namespaces)
        sql = f"SELECT {_FEEDBACK_COLUMNS} FROM feedback {where} ORDER BY created DESC, seq DESC"
        with self._tx() as conn:
            rows = conn.execute(f"{sql} LIMIT ?", (*args, limit)).fetchall()
        return [_feedback(row) for row in rows]

    def pending_feedback(self, adapter_id: str | None = None) -> list[FeedbackEvent]:
        """Return ``queued`` and ``running`` events that no job carries, oldest first.

        After a restart these are updates interrupted before feedback became
        jobs; a job's events recover with their job.
        """
        sql = (
            f"SELECT {_FEEDBACK_COLUMNS} FROM feedback "
            "WHERE status IN ('queued', 'running') AND job_id IS NULL"
        )
        args: tuple[str, ...] = ()
        if adapter_id is not None:
            sql, args = f"{sql} AND adapter_id = ?", (adapter_id,)
        with self._tx() as conn:
            rows = conn.execute(f"{sql} ORDER BY created, seq", args).fetchall()
        return [_feedback(row) for row in rows]

    # ---------------------------------------------------------------- lineage

    def add_version(self, version: AdapterVersion) -> None:
        """Record a published version (recording it again replaces the row)."""
        with self._tx(write=True) as conn:
            conn.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (adapter_id, version) DO UPDATE SET parent = excluded.parent, "
                "created = excluded.created, feedback_ids = excluded.feedback_ids, "
                "metrics = excluded.metrics",
                (
                    version.adapter_id,
                    version.version,
                    version.parent,
                    version.created,
                    _dumps(list(version.feedback_ids)),
                    _dumps(dict(version.metrics)),
                ),
            )
            self._notify(conn, VERSIONS_CHANNEL, f"{version.adapter_id} {version.version}")

    def lineage(self, adapter_id: str) -> list[LineageEntry]:
        """Return the adapter's recorded versions, ascending."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM versions WHERE adapter_id = ? ORDER BY version", (adapter_id,)
            ).fetchall()
        return [
            LineageEntry(
                adapter_id=row["adapter_id"],
                version=row["version"],
                parent=row["parent"],
                created=row["created"],
                feedback_ids=tuple(json.loads(row["feedback_ids"])),
                metrics=json.loads(row["metrics"]),
            )
            for row in rows
        ]

    def record_rollback(
        self, adapter_id: str, from_version: int, to_version: int, *, created: float | None = None
    ) -> None:
        """Record that ``latest`` was moved from one version to another."""
        data = {"from_version": from_version, "to_version": to_version}
        with self._tx(write=True) as conn:
            conn.execute(
                "INSERT INTO events (adapter_id, kind, data, created) VALUES (?, 'rollback', ?, ?)",
                (adapter_id, _dumps(data), time.time() if created is None else created),
            )

    def rollbacks(
        self,
        adapter_id: str | None = None,
        *,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[RollbackEvent]:
        """Return rollbacks, newest first (filters as in :meth:`feedback_events`)."""
        check_limit(limit)
        where, args = adapter_filter(adapter_id, namespaces)
        where = f"{where} AND kind = 'rollback'" if where else "WHERE kind = 'rollback'"
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT * FROM events {where} ORDER BY created DESC, seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [
            RollbackEvent(adapter_id=r["adapter_id"], created=r["created"], **json.loads(r["data"]))
            for r in rows
        ]

    def delete_adapter(self, adapter_id: str) -> None:
        """Forget an adapter's lineage, events and settings; completions, feedback and
        follow-ups stay for audit."""
        with self._tx(write=True) as conn:
            conn.execute("DELETE FROM adapter_settings WHERE adapter_id = ?", (adapter_id,))
            conn.execute("DELETE FROM versions WHERE adapter_id = ?", (adapter_id,))
            conn.execute("DELETE FROM events WHERE adapter_id = ?", (adapter_id,))

    def counts(self) -> dict[str, int]:
        """Return row counts for dashboards and metrics.

        Keys: ``completions``, ``feedback``, ``feedback_<status>`` for each
        status, ``adapters`` (with recorded lineage), ``versions``, ``rollbacks``.
        """
        with self._tx() as conn:
            counts = {
                "completions": _count(conn, "SELECT COUNT(*) FROM completions"),
                "feedback": _count(conn, "SELECT COUNT(*) FROM feedback"),
            }
            by_status = dict(
                conn.execute("SELECT status, COUNT(*) FROM feedback GROUP BY status").fetchall()
            )
            counts |= {f"feedback_{s}": int(by_status.get(s, 0)) for s in STATUSES}
            counts["adapters"] = _count(conn, "SELECT COUNT(DISTINCT adapter_id) FROM versions")
            counts["versions"] = _count(conn, "SELECT COUNT(*) FROM versions")
            counts["rollbacks"] = _count(
                conn, "SELECT COUNT(*) FROM events WHERE kind = 'rollback'"
            )
        return counts

    # -------------------------------------------------------------- internals

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"{self!r} is closed")
        try:
            conn = sqlite3.connect(
                self.db_path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # NORMAL is durable against process crashes in WAL mode; only a power
            # cut can lose the last commits, never corrupt the file.
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open records database {self.db_path}: {exc}") from exc
        return conn

    @contextlib.contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction on a fresh connection; database errors become StorageError."""
        conn = self._connect()
        try:
            # IMMEDIATE takes the write lock up front: a deferred transaction that
            # upgrades later can fail with SQLITE_BUSY without waiting.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise DuplicateKey(str(exc)) from exc
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"records database {self.db_path}: {exc}") from exc
            raise
        finally:
            conn.close()

    def _init_schema(self) -> None:
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open records database {self.db_path}: {exc}") from exc
        finally:
            conn.close()
        with self._tx(write=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            found = row[0]
            if found is not None and found > SCHEMA_VERSION:
                raise StorageError(
                    f"records database {self.db_path} has schema version {found}; this claas "
                    f"reads up to {SCHEMA_VERSION}, upgrade claas to open it"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            for version in range((found or 1) + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
            if found != SCHEMA_VERSION:
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    @staticmethod
    def _feedback_row(
        conn: sqlite3.Connection, feedback_id: str, for_update: str = ""
    ) -> FeedbackEvent:
        row = conn.execute(
            f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE id = ?{for_update}", (feedback_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no feedback with id {feedback_id!r} is recorded")
        return _feedback(row)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _count(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def _feedback(row: sqlite3.Row) -> FeedbackEvent:
    data = dict(row)
    return FeedbackEvent(
        **{**data, "metrics": json.loads(data["metrics"]), "timings": json.loads(data["timings"])}
    )
