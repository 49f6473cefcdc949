"""Exactly-once publishing when workers on many machines share the queue.

A worker can lose its lease while it trains (a pause longer than the lease, a
network partition) and another worker then takes the job over. Two checks keep
the job applied once, both made just before the new version is written, under
the adapter store's lock (so no other publish of the adapter runs meanwhile):

- the worker still holds every job it applies: no other worker took it over
  after its lease ran out (else :class:`LeaseLost`: it publishes nothing, and
  its finish changes nothing);
- no stored version has learned these feedback ids yet (else
  :class:`AlreadyPublished`: a previous holder of the lease got that far, and
  its version is the job's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from claas.errors import Conflict
from claas.jobs.model import FeedbackJob
from claas.records.base import JobQueue
from claas.storage import AdapterStore
from claas.types import AdapterVersion

__all__ = ["AlreadyPublished", "LeaseLost", "publish_fence", "published_version"]


class LeaseLost(Conflict):
    """The worker's lease ran out and another worker took the jobs over."""


class AlreadyPublished(Exception):
    """A version that learned these jobs' feedback is already in the store."""

    def __init__(self, version: AdapterVersion) -> None:
        super().__init__(f"version {version.version} of {version.adapter_id} already learned it")
        self.version = version


def published_version(
    store: AdapterStore, adapter_id: str, feedback_ids: Sequence[str]
) -> AdapterVersion | None:
    """The stored version that already learned any of ``feedback_ids``, if one does."""
    wanted = set(feedback_ids)
    for version in store.versions(adapter_id):
        if wanted & set(version.feedback_ids):
            return version
    return None


def publish_fence(
    queue: JobQueue, store: AdapterStore, jobs: Sequence[FeedbackJob]
) -> Callable[[], None]:
    """The check to run just before publishing ``jobs``' version (see the module docstring)."""
    ids = [job.id for job in jobs]
    feedback_ids = [f for job in jobs for f in job.feedback_ids]
    worker = jobs[0].worker

    def check() -> None:
        if worker is not None and not queue.holds_lease(ids, worker):
            raise LeaseLost(f"worker {worker} no longer holds the lease of {ids}")
        published = published_version(store, jobs[0].adapter_id, feedback_ids)
        if published is not None:
            raise AlreadyPublished(published)

    return check
