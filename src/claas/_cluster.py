"""Serving versions that other processes published (API servers beside ``claas worker``).

With PostgreSQL, a worker that records a new version notifies every process
(``NOTIFY claas_versions``); each loads it into its serving backend at once, so
the first chat on it does not pay the load. Correctness does not rest on the
notification: a chat reads ``latest`` from the shared store and loads that
version before answering, so a chat sent after a ``wait=true`` feedback
returned is served by the new version on any API server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from claas.errors import NotFound
from claas.records.base import VERSIONS_CHANNEL, Notifications, RecordsBackend
from claas.storage import AdapterStore
from claas.types import AdapterVersion

__all__ = ["follow_published"]

log = logging.getLogger("claas.cluster")


def follow_published(
    records: RecordsBackend, store: AdapterStore, publish: Callable[[AdapterVersion], object]
) -> None:
    """Call ``publish(version)`` for each version another process records (if notified)."""
    if not isinstance(records, Notifications):
        return
    loads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claas-follow")

    def load(adapter_id: str, number: int) -> None:
        try:
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
