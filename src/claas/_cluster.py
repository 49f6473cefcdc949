"""Serving versions that other processes published (API servers beside ``claas worker``).

With PostgreSQL, a worker that records a new version notifies every process
(``NOTIFY claas_versions``); each loads it into its serving backend at once, so
the first chat on it does not pay the load. Correctness does not rest on the
notification: a chat reads ``latest`` from the shared store and loads that
version before answering, so a chat sent after a ``wait=true`` feedback
returned is served by the new version on any API server.

A version is loaded under its adapter's lock, which an update holds from
training to going live: the load never races the guard's use of a candidate,
and a version the guard is still judging (or rejected) is skipped, as it is
not ``latest``. A ``claas worker`` process (``jobs.worker = "eager"``) serves
no chats, so it follows nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from claas._adapter_locks import AdapterLocks
from claas.config import Settings
from claas.errors import NotFound
from claas.records.base import VERSIONS_CHANNEL, Notifications, RecordsBackend
from claas.storage import AdapterStore
from claas.types import AdapterVersion

__all__ = ["follow_published"]

log = logging.getLogger("claas.cluster")


def follow_published(
    settings: Settings,
    records: RecordsBackend,
    store: AdapterStore,
    locks: AdapterLocks,
    publish: Callable[[AdapterVersion], object],
) -> None:
    """Call ``publish(version)`` for each live version another process records (if notified)."""
    if not isinstance(records, Notifications) or settings.jobs.worker == "eager":
        return
    loads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claas-follow")

    def load(adapter_id: str, number: int) -> None:
        try:
            with locks.hold(adapter_id):
                if store.latest_version(adapter_id) == number:
                    publish(store.get(adapter_id, number))
        except NotFound:  # deleted or retired meanwhile: nothing to serve
            return
        except Exception:  # the chat that needs it loads it again, and reports the failure
            log.exception("loading %s v%d after its notification failed", adapter_id, number)

    def on_version(payload: str) -> None:
        adapter_id, _, number = payload.rpartition(" ")
        if adapter_id and number.isdigit():  # "" after a reconnect: chats read latest anyway
            loads.submit(load, adapter_id, int(number))

    records.subscribe(VERSIONS_CHANNEL, on_version)
