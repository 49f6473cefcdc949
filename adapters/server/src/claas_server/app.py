"""The app factory: ``create_app(settings)`` wraps a ``Learner`` in FastAPI.

The app adds HTTP and nothing else: routes translate requests into ``Learner``
calls (:mod:`claas_server.openai_api`, :mod:`claas_server.jobs_api`,
:mod:`claas_server.learning_api`), errors
become responses in one place (:mod:`claas_server.errors`), and keys are checked
by :mod:`claas_server.auth`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, FastAPI
from fastapi.responses import PlainTextResponse

import claas
from claas import Learner, Settings
from claas_server import dashboard, followups_api, jobs_api, learning_api, openai_api
from claas_server.auth import KeyRing
from claas_server.deps import Caller, ServerState, State
from claas_server.errors import ERROR_RESPONSES, install_error_handlers
from claas_server.metrics import CONTENT_TYPE, LearnerGauges, Metrics
from claas_server.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from claas_server.schemas import Health

__all__ = ["create_app"]

_DESCRIPTION = """\
Continual learning as a service: chat with a LoRA adapter through the OpenAI API,
send text feedback on an answer, and the next answer comes from the updated adapter.

* `model` is an adapter id `namespace/name`, or the base model (its name or `base`).
* The chat completion `id` is what `POST /v1/feedback` refers to. Feedback is recorded
  as a job at once; by default the call returns once the new version serves, and with
  `"wait": false` it answers 202 with the job to poll at `GET /v1/feedback/{job_id}`.
  A full queue is a 429 with `Retry-After`.
* With API keys configured, send `Authorization: Bearer <key>`; a key only sees the
  adapters of its namespaces. `/health` needs no key.
* Errors are `{"error": {"type", "message", "param", "code"}}`.
"""


def create_app(settings: Settings | None = None, *, learner: Learner | None = None) -> FastAPI:
    """Build the FastAPI app around a learner.

    Args:
        settings: Installation settings; default ``learner.settings`` or
            ``Settings.load()``.
        learner: The learner to serve; by default one is built from ``settings``
            and closed when the app shuts down. A given learner is left open.

    Returns:
        The ASGI app (serve it with uvicorn, or see :func:`claas_server.serve.serve`).
    """
    if settings is None:
        settings = learner.settings if learner is not None else Settings.load()
    owns = learner is None
    core = learner if learner is not None else Learner(settings)
    state = ServerState(
        settings=settings,
        learner=core,
        keyring=KeyRing(settings.server.api_keys),
        metrics=Metrics(),
        stream_executor=ThreadPoolExecutor(max_workers=16, thread_name_prefix="claas-stream"),
        owns_learner=owns,
    )
    core.add_job_listener(state.metrics.observe_job)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.stream_executor.shutdown(wait=False, cancel_futures=True)
        if state.owns_learner:
            state.learner.close()

    app = FastAPI(
        title="CLaaS",
        version=claas.__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.claas = state
    install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(jobs_api.router)
    app.include_router(learning_api.router)
    app.include_router(followups_api.router)
    app.include_router(_ops_router())
    app.include_router(dashboard.router)
    # Added last = outermost: count every request, 413s included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_request_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    return app


def _ops_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health", response_model=Health, summary="Liveness (no key needed)")
    def health() -> Health:
        """Whether the server is up."""
        return Health(version=claas.__version__)

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
            401: ERROR_RESPONSES[401],
        },
        summary="Prometheus metrics",
    )
    def metrics(state: State, caller: Caller) -> PlainTextResponse:
        """Requests, feedback steps and jobs, latency histograms, queue depth, record counts."""
        # Record and job counts span every tenant: only a key bound to all namespaces reads them.
        admin = caller.namespaces is None
        gauges = LearnerGauges(
            queue_depth=state.learner.queue_depth,
            record_counts=state.learner.record_counts if admin else None,
            job_counts=state.learner.job_counts if admin else None,
        )
        return PlainTextResponse(state.metrics.render(gauges), media_type=CONTENT_TYPE)

    return router
