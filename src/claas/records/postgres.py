"""The shared records backend: one PostgreSQL database for many processes and hosts.

:class:`PostgresRecords` is the SQLite backend's code run on PostgreSQL: it
subclasses :class:`~claas.records.Records` and replaces only the connection,
the schema set-up and the hooks where the databases differ. Every query is
written once, in the SQL both databases accept, and a thin dialect layer
(:mod:`claas.records._pg_dialect`) rewrites what differs in spelling:
``?`` placeholders, ``instr``, and the column types of the DDL. The schema
and its migrations are therefore SQLite's own list (``_SCHEMA``, ``_MIGRATIONS``,
``SCHEMA_VERSION``): a new schema version is written once and serves both.

Why not SQLAlchemy Core: the queries are a few dozen plain statements over
five tables, SQLite's driver is the standard library, and what differs is a
handful of words; a query builder would rewrite every statement without
removing any of them, and add a dependency to the embedded default.

What PostgreSQL does differently:

- transactions run at READ COMMITTED; where SQLite's single writer made a
  read-then-write safe, rows are locked (``FOR UPDATE``) or a transaction-level
  advisory lock is held (submits of one adapter, so acceptance order is commit
  order and an idempotency key's twin finds the first);
- workers claim with ``FOR UPDATE SKIP LOCKED``: only an adapter's oldest
  queued job is a candidate, and only while none of its jobs runs;
- changes are announced with ``NOTIFY`` at commit (jobs accepted or freed,
  jobs finished, versions recorded), which :meth:`subscribe` delivers;
- a database that cannot be reached raises
  :class:`~claas.records.base.DatabaseUnavailable` (a ``BackendUnavailable``,
  HTTP 503); the connection pool re-connects by itself once it is back.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

from claas.errors import StorageError, missing_extra
from claas.records._sql import DuplicateKey
from claas.records.base import DatabaseUnavailable
from claas.records.sqlite import _MIGRATIONS, _SCHEMA, SCHEMA_VERSION, Records

try:
    import psycopg
    import psycopg_pool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra("psycopg", "postgres") from exc

from claas.records._pg_dialect import DialectConnection
from claas.records._pg_listen import Listener

__all__ = ["PostgresRecords"]

# Serializes schema set-up between processes starting at once (an arbitrary constant).
_SCHEMA_LOCK = 0x636C616173


class PostgresRecords(Records):
    """The records database and job queue in PostgreSQL.

    Args:
        url: A libpq URL, ``postgresql://user:password@host:port/dbname``.
        pool_size: Connections kept open at most.
        connect_timeout: Seconds a call waits for a connection before
            :class:`~claas.errors.BackendUnavailable`.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
        StorageError: If it holds a newer schema version than this claas reads.
    """

    _FOR_UPDATE = " FOR UPDATE"
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    # Only an adapter's oldest queued job is a candidate: a worker whose snapshot
    # still shows an older one queued never takes the next one past it.
    _CLAIMABLE = (
        "SELECT seq, adapter_id, payload FROM jobs AS j WHERE status = 'queued' "
        "AND NOT EXISTS (SELECT 1 FROM jobs AS r WHERE r.adapter_id = j.adapter_id "
        "AND r.status = 'running') "
        "AND NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.adapter_id = j.adapter_id "
        "AND o.status = 'queued' AND o.seq < j.seq) "
        "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
    )

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.busy_timeout = connect_timeout
        self._closed = False
        self._timeout = connect_timeout
        # min_size=0 and a short reconnect_timeout: after an outage the pool opens
        # fresh connections on demand instead of retrying stale ones with a backoff
        # that can outlast the outage by minutes (psycopg/psycopg#1315).
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=0,
            max_size=pool_size,
            reconnect_timeout=connect_timeout * 2,
            kwargs={"connect_timeout": max(1, round(connect_timeout))},
            check=psycopg_pool.ConnectionPool.check_connection,
            open=False,
            name="claas-records",
        )
        self._pool.open(wait=False)
        self._listener = Listener(url)
        self._listener_guard = threading.Lock()
        try:
            self._init_schema()
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresRecords({_redacted(self.url)!r})"

    def close(self) -> None:
        """Stop using the database: close the pool and stop listening."""
        self._closed = True
        self._listener.stop()
        self._pool.close()

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for each ``NOTIFY`` on ``channel`` (a listener thread).

        After a lost connection comes back, every callback is called once with
        ``""``: what was notified meanwhile is lost, so subscribers look again.
        """
        self._listener.subscribe(channel, callback)

    # -------------------------------------------------------------- internals

    def _serialize(self, conn: sqlite3.Connection, key: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def _notify(self, conn: sqlite3.Connection, channel: str, payload: str = "") -> None:
        conn.execute("SELECT pg_notify(?, ?)", (channel, payload))

    @contextlib.contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One READ COMMITTED transaction on a pooled connection; errors become CLaaS's."""
        if self._closed:
            raise StorageError(f"{self!r} is closed")
        try:
            with self._pool.connection(timeout=self._timeout) as conn, conn.transaction():
                # The dialect layer gives the shared code sqlite3's connection interface.
                yield cast(sqlite3.Connection, DialectConnection(conn))
        except psycopg.errors.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise DatabaseUnavailable(f"records database {self!r} is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"records database {self!r}: {exc}") from exc

    def _init_schema(self) -> None:
        with self._tx(write=True) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if found is not None and found > SCHEMA_VERSION:
                raise StorageError(
                    f"records database {self!r} has schema version {found}; this claas "
                    f"reads up to {SCHEMA_VERSION}, upgrade claas to open it"
                )
            if found == SCHEMA_VERSION:
                return
            if found is None:
                for statement in _SCHEMA:
                    conn.execute(statement)
            for version in range((found or 1) + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))


def _redacted(url: str) -> str:
    """The URL without its password."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    shown: dict[str, Any] = {k: v for k, v in info.items() if k != "password"}
    return " ".join(f"{key}={value}" for key, value in sorted(shown.items()))
