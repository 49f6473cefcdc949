"""Per-adapter turns: changes to one adapter run one at a time, in acceptance order.

Written here rather than taken from a library because the ordering is tied to
acceptance: ``accept`` (recording the feedback) runs atomically with taking the
ticket, so recorded timestamps are ordered exactly like the turns. Other
adapters are never held up.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = ["AdapterTurns"]

_T = TypeVar("_T")


class _Turns:
    """FIFO turns of one adapter: callers run in the order they took a ticket."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0
        self._serving = 0

    def ticket(self, accept: Callable[[], _T]) -> tuple[int, _T]:
        with self._cond:
            accepted = accept()
            self._issued += 1
            return self._issued - 1, accepted

    def wait(self, ticket: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._serving == ticket)

    def done(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    @property
    def depth(self) -> int:
        with self._cond:
            return self._issued - self._serving


class AdapterTurns:
    """The turn queues of every adapter with work accepted and not finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, _Turns] = {}

    @contextlib.contextmanager
    def turn(self, adapter_id: str, accept: Callable[[], _T]) -> Iterator[_T]:
        """Queue behind earlier turns of ``adapter_id``; yield ``accept()``'s result.

        ``accept`` runs when the ticket is taken (before waiting); the body runs
        once every earlier turn of the adapter has finished.
        """
        with self._lock:
            turns = self._queues.setdefault(adapter_id, _Turns())
            ticket, accepted = turns.ticket(accept)
        try:
            turns.wait(ticket)
            yield accepted
        finally:
            turns.done()
            with self._lock:
                # Drop idle queues so arbitrary ids cannot grow the map without bound.
                if turns.depth == 0 and self._queues.get(adapter_id) is turns:
                    del self._queues[adapter_id]

    def depth(self, adapter_id: str | None = None) -> int:
        """Turns taken and not finished, of one adapter or of all."""
        with self._lock:
            queues = list(self._queues.items())
        return sum(t.depth for a, t in queues if adapter_id is None or a == adapter_id)
