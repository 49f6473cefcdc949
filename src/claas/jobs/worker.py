"""The worker loop: claim a job, keep its lease alive, apply it, repeat.

An in-process worker is a few daemon threads of the process that owns the
:class:`~claas.learner.Learner` (``claas serve``, a notebook). Each thread
claims from the records database, so several processes on one SQLite file
(or one PostgreSQL database, ``claas worker``) share the queue. A thread is
woken at once by a submit of its own process; other processes' submits wake it
through the database's notifications where it has them (PostgreSQL's
``LISTEN``), and otherwise it polls every ``poll_seconds``. Recovery runs here too: a job
whose worker died (its process is gone) or whose lease ran out goes back to
the queue, to be applied once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from claas.jobs.model import FeedbackJob
from claas.records.base import JOBS_CHANNEL, JobQueue, Notifications

__all__ = ["JobWorker", "worker_is_alive"]

log = logging.getLogger("claas.jobs")
_HOST = socket.gethostname()
_LIVE: set[str] = set()  # this process's running workers
_LIVE_GUARD = threading.Lock()


def worker_is_alive(worker: str) -> bool:
    """Whether the worker that holds a lease may still be working.

    A worker id is ``host:pid:nonce``. On this host a dead process is known at
    once; a worker of this process is alive while registered; one on another
    host is trusted until its lease runs out.
    """
    host, _, rest = worker.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        with _LIVE_GUARD:
            return worker in _LIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class JobWorker:
    """Threads that apply queued jobs through ``apply``.

    Args:
        queue: The job queue (the records backend).
        apply: Applies claimed jobs (one update) and records their outcome.
        threads: Updates applied at once.
        lease_seconds: A claim's lease; renewed every third of it while running.
        max_coalesce: Jobs of one adapter merged into one update.
        poll_seconds: How often an idle thread looks for other processes' jobs.
    """

    def __init__(
        self,
        queue: JobQueue,
        apply: Callable[[Sequence[FeedbackJob]], None],
        *,
        threads: int = 1,
        lease_seconds: float = 30.0,
        max_coalesce: int = 1,
        poll_seconds: float = 1.0,
    ) -> None:
        self.id = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._queue = queue
        self._apply = apply
        self._count = threads
        self._lease = lease_seconds
        self._coalesce = max_coalesce
        self._poll = poll_seconds
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._last_recovery = time.monotonic()
        if isinstance(queue, Notifications):  # woken by NOTIFY; wait only to look for stale jobs
            queue.subscribe(JOBS_CHANNEL, lambda _payload: self.notify_all())
            self._poll = max(poll_seconds, lease_seconds / 3)

    def start(self) -> None:
        """Recover stale jobs and start the threads (idempotent)."""
        with self._wake:
            if self._threads or self._stopping:
                return
            with _LIVE_GUARD:
                _LIVE.add(self.id)
            self._threads = [
                threading.Thread(target=self._run, name=f"claas-worker-{i}", daemon=True)
                for i in range(self._count)
            ]
        self.recover()
        for thread in self._threads:
            thread.start()

    def recover(self) -> list[str]:
        """Put jobs of dead workers and expired leases back in the queue."""
        requeued = self._queue.requeue_stale(worker_is_alive)
        if requeued:
            log.warning("re-queued %d interrupted job(s): %s", len(requeued), requeued)
            self.notify()
        return requeued

    def notify(self) -> None:
        """Wake an idle thread: a job was submitted."""
        with self._wake:
            self._pending_wakes += 1
            self._wake.notify()

    def notify_all(self) -> None:
        """Wake every idle thread: another process says a job may be claimable."""
        with self._wake:
            self._pending_wakes += self._count
            self._wake.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; a thread finishes the update it is applying first."""
        self.stop_soon()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)
        with _LIVE_GUARD:
            _LIVE.discard(self.id)

    def stop_soon(self) -> None:
        """Ask the threads to stop without waiting for them."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                self._recover_now_and_then()
                claimed = self._queue.claim_jobs(
                    self.id, lease_seconds=self._lease, max_coalesce=self._coalesce
                )
            except Exception:  # a database hiccup must not end the worker; retry after a pause
                log.exception("claiming a job failed; retrying")
                claimed = []
            if not claimed:
                self._idle()
                continue
            with self._heartbeat([job.id for job in claimed]):
                try:
                    self._apply(claimed)
                except Exception:  # e.g. the database is down: the lease runs out, recovery retries
                    log.exception("applying %s failed; its lease will expire", claimed)
                    self._idle()

    def _recover_now_and_then(self) -> None:
        """Look for stale jobs about three times per lease, not at every poll."""
        now = time.monotonic()
        with self._wake:
            due = now - self._last_recovery >= self._lease / 3
            if due:
                self._last_recovery = now
        if due:
            self.recover()

    def _idle(self) -> None:
        with self._wake:
            if self._pending_wakes == 0 and not self._stopping:
                self._wake.wait(self._poll)
            self._pending_wakes = max(self._pending_wakes - 1, 0)

    @contextlib.contextmanager
    def _heartbeat(self, job_ids: list[str]) -> Iterator[None]:
        """Renew the lease of ``job_ids`` every third of it until the body ends."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self._lease / 3):
                try:
                    self._queue.renew_lease(job_ids, self.id, self._lease)
                except Exception:  # the next beat retries; the lease is three beats long
                    log.exception("renewing the lease of %s failed", job_ids)

        thread = threading.Thread(target=beat, name="claas-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
