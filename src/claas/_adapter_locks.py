"""One lock per adapter, so changes to one adapter in this process never overlap.

The job queue already orders an adapter's updates and never runs two at once;
these locks keep a rollback or a delete from interleaving with an update this
process is applying. Written here because the lock map must shrink again:
arbitrary adapter ids would otherwise grow it without bound.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["AdapterLocks"]


class AdapterLocks:
    """Locks of the adapters that something in this process is changing."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, adapter_id: str) -> Iterator[None]:
        """Hold ``adapter_id``'s lock for the body (waiting for its current holder)."""
        with self._guard:
            lock, users = self._held.get(adapter_id, (threading.Lock(), 0))
            self._held[adapter_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._held[adapter_id]
                if users == 1:
                    del self._held[adapter_id]
                else:
                    self._held[adapter_id] = (lock, users - 1)
