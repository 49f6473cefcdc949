"""``LISTEN`` on one dedicated connection and call back subscribers from a thread.

A notification is a hint, not a record: one sent while this connection was
down is lost, so after re-connecting every subscriber is called once with an
empty payload and looks at the database again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

__all__ = ["Listener"]

log = logging.getLogger("claas.records")
_WAIT_SECONDS = 0.5  # how often the thread looks for new channels and for stop
_RECONNECT_SECONDS = 1.0


class Listener:
    """Subscribers of ``NOTIFY`` channels of one database (started on first subscribe)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._guard = threading.Lock()
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` on each notification of ``channel``."""
        with self._guard:
            self._callbacks.setdefault(channel, []).append(callback)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="claas-listen", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop listening (waits for the thread)."""
        self._stop.set()
        with self._guard:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                log.warning("listening for records notifications failed (%s); reconnecting", exc)
                self._stop.wait(_RECONNECT_SECONDS)

    def _listen(self) -> None:
        with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
            listening: set[str] = set()
            first = True
            while not self._stop.is_set():
                with self._guard:
                    wanted = set(self._callbacks)
                for channel in sorted(wanted - listening):
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    listening.add(channel)
                if first:  # whatever happened before LISTEN took effect
                    self._dispatch_all("")
                    first = False
                for note in conn.notifies(timeout=_WAIT_SECONDS):
                    self._dispatch(note.channel, note.payload)

    def _dispatch_all(self, payload: str) -> None:
        with self._guard:
            channels = list(self._callbacks)
        for channel in channels:
            self._dispatch(channel, payload)

    def _dispatch(self, channel: str, payload: str) -> None:
        with self._guard:
            callbacks = list(self._callbacks.get(channel, ()))
        for callback in callbacks:
            try:
                callback(payload)
            except Exception:  # one subscriber's failure must not silence the others
                log.exception("records notification callback %r failed", callback)
