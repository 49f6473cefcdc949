"""``claas worker``: a process that applies queued feedback jobs and serves nothing.

Beside ``claas serve --no-worker`` API servers, any number of these share one
PostgreSQL database (``CLAAS_DATABASE_URL``) and one adapter store; each job is
applied once, one adapter's jobs one at a time, in acceptance order.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from claas_cli.context import make_learner, state_of

__all__ = ["worker"]

log = logging.getLogger("claas.worker")


def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int,
        typer.Option(min=1, help="Updates applied at once (one per adapter at most)."),
    ] = 1,
) -> None:
    """Apply queued feedback jobs until SIGTERM or Ctrl-C.

    On SIGTERM the worker stops claiming, finishes the updates it is applying
    and exits; a worker killed outright loses its leases, and another worker
    applies those jobs, once.
    """
    state = state_of(ctx)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    settings = state.settings(jobs_worker="eager", jobs_workers=concurrency)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    learner = make_learner(settings)
    try:
        log.info("applying feedback jobs (%d at once); SIGTERM stops", concurrency)
        stop.wait()
        log.info("stopping: finishing the updates in progress")
    finally:
        learner.close()
    log.info("stopped")
