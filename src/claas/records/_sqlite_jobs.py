"""The job queue in the records database (schema version 2), SQLite's SQL.

Claims are taken inside ``BEGIN IMMEDIATE`` (one writer at a time on the
file), so two workers, in one process or several, never claim the same job,
and an adapter's next job is claimed only when none of its jobs is running:
each adapter's updates apply one at a time, in acceptance order.

The PostgreSQL backend (:mod:`claas.records.postgres`) runs the same methods
through its dialect layer and replaces the claim's query (``FOR UPDATE SKIP
LOCKED``). The hooks it fills are ``_serialize`` (a lock held to the end of
the transaction; SQLite's write lock already is one), ``_notify`` (wake other
processes at commit) and ``_FOR_UPDATE`` (row locks on read-then-write).

A finish names the worker that claimed the jobs: a worker whose lease ran out
and whose jobs another worker took over changes nothing (fencing).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from claas.errors import Conflict, IdempotencyConflict, InvalidRequest, JobNotFound, QueueFull
from claas.jobs.model import JOB_STATUSES, FeedbackJob, JobStatus, QueueLimits
from claas.records._sql import adapter_filter, check_limit
from claas.records.base import DONE_CHANNEL, JOBS_CHANNEL, NewFeedback

__all__ = ["JOB_MIGRATION", "SQLiteJobRows"]

JOB_MIGRATION = (
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        adapter_id TEXT NOT NULL, status TEXT NOT NULL, accepted REAL NOT NULL,
        payload TEXT NOT NULL, body_hash TEXT NOT NULL, idempotency_key TEXT,
        feedback_ids TEXT NOT NULL, started REAL, finished REAL, version INTEGER,
        parent_version INTEGER, metrics TEXT NOT NULL, timings TEXT NOT NULL, error TEXT,
        error_code TEXT, attempts INTEGER NOT NULL, worker TEXT, lease_expires REAL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_key ON jobs (adapter_id, idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_by_adapter ON jobs (adapter_id, seq)",
    "ALTER TABLE feedback ADD COLUMN job_id TEXT",
)
_COLUMNS = (
    "id, adapter_id, status, accepted, feedback_ids, idempotency_key, started, finished, "
    "version, parent_version, metrics, timings, error, error_code, attempts, worker"
)

_FEEDBACK_STATUS: Mapping[str, str] = {
    "queued": "queued",
    "running": "running",
    "applied": "applied",
    "failed": "failed",
    "rejected": "failed",
    "cancelled": "failed",
    # The feedback was read and found to teach nothing: done, with no new version.
    "skipped": "applied",
}


class SQLiteJobRows:
    """Job methods of :class:`~claas.records.Records` (it provides ``_tx``)."""

    _tx: Callable[..., contextlib.AbstractContextManager[sqlite3.Connection]]
    _FOR_UPDATE = ""  # SQLite's write transaction already excludes every other writer
    _SKIP_LOCKED = ""
    # The oldest queued job of an adapter with none running.
    _CLAIMABLE = (
        "SELECT seq, adapter_id, payload FROM jobs AS j WHERE status = 'queued' AND NOT "
        "EXISTS (SELECT 1 FROM jobs AS r WHERE r.adapter_id = j.adapter_id "
        "AND r.status = 'running') ORDER BY seq LIMIT 1"
    )

    def _serialize(self, conn: sqlite3.Connection, key: str) -> None:
        """Hold ``key``'s lock to the end of the transaction (``BEGIN IMMEDIATE`` did)."""

    def _notify(self, conn: sqlite3.Connection, channel: str, payload: str = "") -> None:
        """Tell other processes at commit (SQLite cannot; they poll)."""

    def add_job(
        self,
        job: FeedbackJob,
        *,
        payload: str,
        body_hash: str,
        feedback: Sequence[NewFeedback],
        limits: QueueLimits,
    ) -> tuple[FeedbackJob, bool]:
        """Record a queued job and its feedback events, atomically (accepted: now).

        Returns:
            The job and ``True``, or the existing job with this idempotency key
            and ``False`` (nothing is written then).

        Raises:
            IdempotencyConflict: The key was used on this adapter with another body.
            QueueFull: The adapter's or the global queue is at its limit.
        """
        with self._tx(write=True) as conn:
            # Per adapter: a key's twin waits and finds the first; acceptance order is commit order.
            self._serialize(conn, f"jobs:{job.adapter_id}")
            if job.idempotency_key is not None:
                existing = conn.execute(
                    f"SELECT {_COLUMNS}, body_hash FROM jobs "
                    "WHERE adapter_id = ? AND idempotency_key = ?",
                    (job.adapter_id, job.idempotency_key),
                ).fetchone()
                if existing is not None:
                    if existing["body_hash"] != body_hash:
                        raise IdempotencyConflict(
                            f"idempotency key {job.idempotency_key!r} was used on "
                            f"{job.adapter_id} with a different request (job {existing['id']})"
                        )
                    return _job(existing), False
            _check_limits(conn, job.adapter_id, limits)
            # Stamped under the write lock, so acceptance times follow acceptance order.
            job = attrs.evolve(job, accepted=time.time())
            conn.execute(
                "INSERT INTO jobs (id, adapter_id, status, accepted, payload, body_hash, "
                "idempotency_key, feedback_ids, metrics, timings, attempts) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, '{}', '{}', 0)",
                (
                    job.id,
                    job.adapter_id,
                    job.accepted,
                    payload,
                    body_hash,
                    job.idempotency_key,
                    json.dumps(list(job.feedback_ids)),
                ),
            )
            conn.executemany(
                "INSERT INTO feedback (id, adapter_id, completion_id, text, status, metrics, "
                "timings, created, job_id) VALUES (?, ?, ?, ?, 'queued', '{}', '{}', ?, ?)",
                [
                    (f.feedback_id, job.adapter_id, f.completion_id, f.text, job.accepted, job.id)
                    for f in feedback
                ],
            )
            self._notify(conn, JOBS_CHANNEL)
        return job, True

    def get_job(self, job_id: str) -> FeedbackJob:
        """One job (``JobNotFound`` if unknown)."""
        with self._tx() as conn:
            return _one(conn, job_id)

    def job_payload(self, job_id: str) -> str:
        """The JSON payload a job was accepted with."""
        with self._tx() as conn:
            row = conn.execute("SELECT payload FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no feedback job with id {job_id!r}")
        return str(row["payload"])

    def jobs(
        self,
        adapter_id: str | None = None,
        *,
        status: JobStatus | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackJob]:
        """Jobs, newest first (filters as in ``feedback_events``, and by status)."""
        check_limit(limit)
        if status is not None and status not in JOB_STATUSES:
            raise InvalidRequest(f"job status {status!r} is not one of {', '.join(JOB_STATUSES)}")
        where, args = adapter_filter(adapter_id, namespaces)
        if status is not None:
            where = f"{where} AND status = ?" if where else "WHERE status = ?"
            args = (*args, status)
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY seq DESC LIMIT ?", (*args, limit)
            ).fetchall()
        return [_job(row) for row in rows]

    def job_counts(self, adapter_id: str | None = None) -> dict[str, int]:
        """Jobs per status (of one adapter, or of all), every status present."""
        where, args = ("WHERE adapter_id = ?", (adapter_id,)) if adapter_id else ("", ())
        with self._tx() as conn:
            found = dict(
                conn.execute(f"SELECT status, COUNT(*) FROM jobs {where} GROUP BY status", args)
            )
        return {status: int(found.get(status, 0)) for status in JOB_STATUSES}

    def claim_jobs(
        self, worker: str, *, lease_seconds: float, max_coalesce: int = 1
    ) -> list[FeedbackJob]:
        """Claim the oldest queued job of an adapter with none running (and followers).

        Followers are the adapter's next queued jobs with the same config, up to
        ``max_coalesce`` jobs in all, applied as one update. Returns ``[]`` if
        nothing is claimable.
        """
        now = time.time()
        with self._tx() as conn:  # idle workers poll: look before taking the write lock
            if (
                conn.execute("SELECT 1 FROM jobs WHERE status = 'queued' LIMIT 1").fetchone()
                is None
            ):
                return []
        with self._tx(write=True) as conn:
            first = conn.execute(self._CLAIMABLE).fetchone()
            if first is None:
                return []
            rows = conn.execute(
                "SELECT id, payload FROM jobs WHERE adapter_id = ? AND status = 'queued' "
                f"ORDER BY seq LIMIT ?{self._FOR_UPDATE}",
                (first["adapter_id"], max_coalesce),
            ).fetchall()
            config = json.loads(first["payload"])["config"]
            ids = []
            for row in rows:  # contiguous, same config: coalescing never reorders
                if json.loads(row["payload"])["config"] != config:
                    break
                ids.append(row["id"])
            marks = ", ".join("?" * len(ids))
            conn.execute(
                "UPDATE jobs SET status = 'running', worker = ?, lease_expires = ?, "
                f"started = ?, attempts = attempts + 1 WHERE id IN ({marks})",
                (worker, now + lease_seconds, now, *ids),
            )
            conn.execute(
                f"UPDATE feedback SET status = 'running' WHERE job_id IN ({marks})", tuple(ids)
            )
            return [_one(conn, job_id) for job_id in ids]

    def holds_lease(self, job_ids: Sequence[str], worker: str) -> bool:
        """Whether ``worker`` still runs every one of ``job_ids`` (no one took them over).

        An expired lease nobody took over still counts: no other worker runs
        the job, so its holder may finish it.
        """
        marks = ", ".join("?" * len(job_ids))
        with self._tx() as conn:
            held = conn.execute(
                f"SELECT COUNT(*) FROM jobs WHERE id IN ({marks}) AND status = 'running' "
                "AND worker = ?",
                (*job_ids, worker),
            ).fetchone()[0]
        return int(held) == len(set(job_ids))

    def renew_lease(self, job_ids: Sequence[str], worker: str, lease_seconds: float) -> None:
        """Extend a worker's claim on its running jobs (its heartbeat)."""
        marks = ", ".join("?" * len(job_ids))
        with self._tx(write=True) as conn:
            conn.execute(
                f"UPDATE jobs SET lease_expires = ? WHERE worker = ? AND status = 'running' "
                f"AND id IN ({marks})",
                (time.time() + lease_seconds, worker, *job_ids),
            )

    def finish_jobs(
        self,
        job_ids: Sequence[str],
        *,
        status: JobStatus,
        version: int | None = None,
        parent_version: int | None = None,
        metrics: Mapping[str, float] | None = None,
        timings: Mapping[str, float] | None = None,
        error: str | None = None,
        error_code: str | None = None,
        worker: str | None = None,
    ) -> list[FeedbackJob]:
        """Move running jobs (and their feedback events) to a final status.

        With ``worker``, only jobs that worker still runs change: one whose lease
        was taken over finishes nothing. Returns the jobs as they are then.
        """
        now = time.time()
        marks = ", ".join("?" * len(job_ids))
        fence, owner = ("AND worker = ?", (worker,)) if worker is not None else ("", ())
        metrics_json, timings_json = (
            json.dumps(dict(metrics or {})),
            json.dumps(dict(timings or {})),
        )
        with self._tx(write=True) as conn:
            finished = conn.execute(
                "UPDATE jobs SET status = ?, version = ?, parent_version = ?, metrics = ?, "
                "timings = ?, error = ?, error_code = ?, finished = ?, worker = NULL, "
                f"lease_expires = NULL WHERE status = 'running' AND id IN ({marks}) {fence} "
                "RETURNING id",
                (status, version, parent_version, metrics_json, timings_json, error, error_code,
                 now, *job_ids, *owner),
            ).fetchall()  # fmt: skip
            done = tuple(row[0] for row in finished)
            if done:
                done_marks = ", ".join("?" * len(done))
                conn.execute(
                    "UPDATE feedback SET status = ?, version = ?, parent_version = ?, "
                    "metrics = ?, timings = ?, error = ?, finished = ? "
                    f"WHERE status IN ('queued', 'running') AND job_id IN ({done_marks})",
                    (_FEEDBACK_STATUS[status], version, parent_version, metrics_json,
                     timings_json, error, now, *done),
                )  # fmt: skip
                self._notify(conn, JOBS_CHANNEL)  # the adapter's next job is claimable now
                for job_id in done:
                    self._notify(conn, DONE_CHANNEL, job_id)
            return [_one(conn, job_id) for job_id in job_ids]

    def cancel_job(self, job_id: str, *, reason: str = "cancelled before it ran") -> FeedbackJob:
        """Cancel a queued job.

        Raises:
            JobNotFound: Unknown id.
            Conflict: The job is running or already final (nothing changes).
        """
        now = time.time()
        with self._tx(write=True) as conn:
            job = _one(conn, job_id, self._FOR_UPDATE)
            if job.status != "queued":
                raise Conflict(f"job {job_id} is {job.status}; only a queued job can be cancelled")
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', error = ?, finished = ? WHERE id = ?",
                (reason, now, job_id),
            )
            conn.execute(
                "UPDATE feedback SET status = 'failed', error = ?, finished = ? WHERE job_id = ?",
                (reason, now, job_id),
            )
            self._notify(conn, DONE_CHANNEL, job_id)
            return _one(conn, job_id)

    def requeue_stale(self, is_alive: Callable[[str], bool]) -> list[str]:
        """Give back running jobs whose worker died or whose lease ran out; return their ids."""
        now = time.time()
        with self._tx(write=True) as conn:
            rows = conn.execute(
                "SELECT id, worker, lease_expires FROM jobs WHERE status = 'running'"
                + self._SKIP_LOCKED  # a job being finished now is not stale
            ).fetchall()
            stale = [
                r["id"]
                for r in rows
                if (r["lease_expires"] or 0) < now or not is_alive(r["worker"] or "")
            ]
            if stale:
                marks = ", ".join("?" * len(stale))
                conn.execute(
                    "UPDATE jobs SET status = 'queued', worker = NULL, lease_expires = NULL "
                    f"WHERE id IN ({marks})",
                    tuple(stale),
                )
                conn.execute(
                    f"UPDATE feedback SET status = 'queued' WHERE job_id IN ({marks})",
                    tuple(stale),
                )
                self._notify(conn, JOBS_CHANNEL)
        return stale

    def cancel_adapter_jobs(self, adapter_id: str, reason: str) -> list[str]:
        """Cancel every queued job of an adapter (it was deleted); return their ids."""
        now = time.time()
        with self._tx(write=True) as conn:
            ids = [
                row["id"]
                for row in conn.execute(
                    "SELECT id FROM jobs WHERE adapter_id = ? AND status = 'queued' "
                    f"ORDER BY seq{self._FOR_UPDATE}",
                    (adapter_id,),
                )
            ]
            marks = ", ".join("?" * len(ids))
            if ids:
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', error = ?, finished = ? "
                    f"WHERE id IN ({marks})",
                    (reason, now, *ids),
                )
                conn.execute(
                    "UPDATE feedback SET status = 'failed', error = ?, finished = ? "
                    f"WHERE job_id IN ({marks})",
                    (reason, now, *ids),
                )
                for job_id in ids:
                    self._notify(conn, DONE_CHANNEL, job_id)
        return ids


def _check_limits(conn: sqlite3.Connection, adapter_id: str, limits: QueueLimits) -> None:
    total, mine = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN adapter_id = ? THEN 1 ELSE 0 END), 0) "
        "FROM jobs WHERE status = 'queued'",
        (adapter_id,),
    ).fetchone()
    if mine >= limits.per_adapter:
        raise QueueFull(
            f"{mine} jobs are queued for {adapter_id}; the limit is {limits.per_adapter} "
            "(Settings.jobs.max_queued_per_adapter); retry later"
        )
    if total >= limits.total:
        raise QueueFull(
            f"{total} jobs are queued; the limit is {limits.total} (Settings.jobs.max_queued); "
            "retry later"
        )


def _one(conn: sqlite3.Connection, job_id: str, for_update: str = "") -> FeedbackJob:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE id = ?{for_update}", (job_id,)
    ).fetchone()
    if row is None:
        raise JobNotFound(f"no feedback job with id {job_id!r}")
    return _job(row)


def _job(row: sqlite3.Row) -> FeedbackJob:
    data: dict[str, Any] = {key: row[key] for key in _COLUMNS.split(", ")}
    data["feedback_ids"] = tuple(json.loads(data["feedback_ids"]))
    data["metrics"] = json.loads(data["metrics"])
    data["timings"] = json.loads(data["timings"])
    return FeedbackJob(**data)
