"""The dashboard at ``/dashboard``: adapters, versions and lineage, feedback jobs, learning charts.

Plain server-rendered HTML with inline SVG charts and no JavaScript.

With API keys configured the dashboard needs a key too, taken from (in order)
``Authorization: Bearer <key>``, the ``claas_key`` cookie that the login form at
``/dashboard`` sets, or a ``?key=`` query parameter (which also sets the cookie;
prefer the form: a key in a URL can end up in logs and history). A key sees only
the adapters of its namespaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from claas import AdapterVersion
from claas.errors import ClaasError
from claas.jobs.model import FeedbackJob
from claas.records import FeedbackEvent
from claas_server.auth import COOKIE, Principal, bearer_token
from claas_server.dashboard_followups import followups_section
from claas_server.dashboard_html import (
    CSP,
    adapter_href,
    chart,
    esc,
    number,
    page,
    sparkline,
    stats,
    table,
    td,
    when,
)
from claas_server.deps import ServerState, get_state, store_relative
from claas_server.errors import Unauthorized, describe
from claas_server.jobs_api import public_error

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_LOSS_KEYS = ("distill_loss", "loss")


def _html(content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status, headers=_HEADERS)


def _login_page(message: str) -> HTMLResponse:
    body = (
        f"<section><h2>Sign in</h2><p>{esc(message)}</p>"
        '<form class=login method=post action="/dashboard/login">'
        '<input type=password name=key placeholder="API key" autocomplete=off required>'
        "<button type=submit>Open dashboard</button></form></section>"
    )
    response = _html(page("CLaaS dashboard: sign in", body), status=401)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _authenticate(request: Request, key: str | None) -> tuple[Principal, str | None]:
    """The caller, and a query key to remember in the cookie (if that is what worked)."""
    keyring = get_state(request).keyring
    header = bearer_token(request.headers.get("authorization"))
    if header is not None or not keyring.enabled:
        return keyring.authenticate(header), None
    if key:
        return keyring.authenticate(key), key
    return keyring.authenticate(request.cookies.get(COOKIE)), None


def _remember(response: Response, request: Request, key: str | None) -> Response:
    if key is not None:
        response.set_cookie(
            COOKIE,
            key,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/dashboard",
        )
    return response


def _who(caller: Principal) -> str:
    if caller.namespaces is None:
        return "all namespaces"
    return "namespaces: " + ", ".join(sorted(caller.namespaces))


def _loss(metrics: Any) -> float | None:
    for key in _LOSS_KEYS:
        value = metrics.get(key) if hasattr(metrics, "get") else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# ----------------------------------------------------------------------- overview


def _adapter_rows(state: ServerState, caller: Principal) -> list[list[str]]:
    rows = []
    for summary in state.learner.adapter_summaries(caller.namespaces):
        adapter_id, live = summary.adapter_id, summary.live
        link = td(f'<a href="{esc(adapter_href(adapter_id))}">{esc(adapter_id)}</a>', raw=True)
        if live is None:
            rows.append([link, td("damaged", cls="status-failed"), td(summary.versions)])
            rows[-1] += [td(store_relative(state, summary.error or "")), td(""), td(""), td("")]
            continue
        versions = state.learner.versions(adapter_id)
        losses = [
            loss
            for v in versions
            if v.parent is not None and (loss := _loss(v.metrics)) is not None
        ]
        rows.append(
            [
                link,
                td(f"v{live.version}", cls="live"),
                td(len(versions), numeric=True),
                td(live.base_model),
                td(when(live.created), cls="time"),
                td(number(_loss(live.metrics)), numeric=True),
                td(sparkline(losses), raw=True),
            ]
        )
    return rows


def _feedback_rows(events: Sequence[FeedbackEvent], *, with_adapter: bool) -> list[list[str]]:
    rows = []
    for e in events:
        text = e.text if len(e.text) <= 140 else e.text[:137] + "..."
        step = f"v{e.parent_version} → v{e.version}" if e.version is not None else ""
        cells = [td(when(e.created), cls="time")]
        if with_adapter:
            cells.append(
                td(f'<a href="{esc(adapter_href(e.adapter_id))}">{esc(e.adapter_id)}</a>', raw=True)
            )
        cells += [
            td(e.status, cls=f"status-{e.status}"),
            td(step),
            td(text),
            td(number(_loss(e.metrics)), numeric=True),
            td(number(e.timings.get("train_seconds"), 3), numeric=True),
            td(number(e.timings.get("total_seconds"), 3), numeric=True),
            td(e.error or ""),
        ]
        rows.append(cells)
    return rows


_FEEDBACK_HEADERS = ("status", "update", "feedback", "loss", "train s", "total s", "error")


def _visible_events(state: ServerState, caller: Principal, limit: int) -> list[FeedbackEvent]:
    return state.learner.feedback_events(namespaces=caller.namespaces, limit=limit)


_JOB_HEADERS = ("state", "update", "items", "attempts", "wait s", "total s", "error")


def _job_rows(jobs: Sequence[FeedbackJob], *, with_adapter: bool) -> list[list[str]]:
    """One row per job: when it was accepted, its state, the version it made, why it failed."""
    rows = []
    for job in jobs:
        step = f"v{job.parent_version} → v{job.version}" if job.version is not None else ""
        cells = [td(job.id), td(when(job.accepted), cls="time")]
        if with_adapter:
            link = f'<a href="{esc(adapter_href(job.adapter_id))}">{esc(job.adapter_id)}</a>'
            cells.append(td(link, raw=True))
        cells += [
            td(job.status, cls=f"status-{job.status}"),
            td(step),
            td(len(job.feedback_ids), numeric=True),
            td(job.attempts, numeric=True),
            td(number(job.timings.get("queue_seconds"), 3), numeric=True),
            td(number(job.timings.get("total_seconds"), 3), numeric=True),
            td(public_error(job) or ""),
        ]
        rows.append(cells)
    return rows


def _queue_numbers(state: ServerState) -> dict[str, Any]:
    """Jobs per state across every tenant (shown to a key bound to all namespaces only)."""
    counts = state.learner.job_counts()
    return {
        "updates queued": counts.get("queued", 0),
        "updates running": counts.get("running", 0),
        "jobs failed": counts.get("failed", 0) + counts.get("rejected", 0),
        "jobs skipped": counts.get("skipped", 0),
    }


def _overview(state: ServerState, caller: Principal) -> str:
    rows = _adapter_rows(state, caller)
    events = _visible_events(state, caller, 50)
    numbers: dict[str, Any] = {
        "adapters": len(rows),
        "recent feedback": len(events),
        "applied": sum(e.status == "applied" for e in events),
        "failed": sum(e.status == "failed" for e in events),
    }
    if caller.namespaces is None:
        numbers.update(_queue_numbers(state))
    jobs = table(
        "jobs",
        ("job", "accepted (UTC)", "adapter", *_JOB_HEADERS),
        _job_rows(state.learner.jobs(namespaces=caller.namespaces, limit=20), with_adapter=True),
        empty="No feedback jobs yet.",
    )
    adapters = table(
        "adapters",
        ("adapter", "live", "versions", "base model", "updated (UTC)", "last loss", "loss trend"),
        rows,
        empty="No adapters yet: POST /v1/adapters to create one.",
    )
    feedback = table(
        "feedback",
        ("received (UTC)", "adapter", *_FEEDBACK_HEADERS),
        _feedback_rows(events, with_adapter=True),
        empty="No feedback yet.",
    )
    body = (
        f"<section><h2>Overview</h2>{stats(numbers)}</section>"
        f"<section><h2>Adapters</h2>{adapters}</section>"
        f"<section><h2>Feedback jobs</h2>{jobs}</section>"
        f"<section><h2>Recent feedback</h2>{feedback}</section>"
    )
    return page("CLaaS dashboard", body, who=_who(caller))


# ------------------------------------------------------------------------ adapter


def _lineage(versions: Sequence[AdapterVersion], live: int) -> str:
    """Versions as a tree by parent (a parent no longer retained makes a root)."""
    known = {v.version for v in versions}
    children: dict[int | None, list[AdapterVersion]] = {}
    for v in versions:
        parent = v.parent if v.parent in known else None
        children.setdefault(parent, []).append(v)

    def render(parent: int | None, depth: int) -> str:
        items = []
        for v in children.get(parent, []):
            mark = " <span class=live>(live)</span>" if v.version == live else ""
            if v.rejected:
                mark += " <span class=status-failed>(rejected)</span>"
            sub = render(v.version, depth + 1) if depth < 200 else ""
            items.append(f"<li>v{v.version}{mark}{sub}</li>")
        return f"<ul{' class=tree' if depth == 0 else ''}>{''.join(items)}</ul>" if items else ""

    return render(None, 0)


def _guard_cell(version: AdapterVersion) -> str:
    """The guard's verdict on a version: passed, or rejected with its reasons."""
    verdict = version.verdict
    if verdict is None:
        return td("")
    if verdict.get("passed"):
        return td("passed", cls="status-applied")
    forced = " (forced live)" if verdict.get("forced") else ""
    reasons = "; ".join(verdict.get("reasons") or [])
    return td(f"rejected{forced}: {reasons}", cls="status-failed")


def _adapter_page(state: ServerState, caller: Principal, adapter_id: str) -> str:
    summary = state.learner.adapter_summary(adapter_id)
    if summary.live is None:
        damage = store_relative(state, summary.error or "")
        body = (
            f"<section><h2>{esc(adapter_id)}</h2><p class=status-failed>"
            f"This adapter cannot be served: {esc(damage)}</p></section>"
        )
        return page(f"CLaaS: {adapter_id}", body, who=_who(caller))
    live = summary.live
    versions = state.learner.versions(adapter_id)
    events = state.learner.feedback_events(adapter_id, limit=100)
    jobs = state.learner.jobs(adapter_id, limit=20)
    rollbacks = state.learner.rollbacks(adapter_id, limit=20)
    trained = [v for v in versions if v.parent is not None]
    loss_points = [
        (float(v.version), loss) for v in trained if (loss := _loss(v.metrics)) is not None
    ]
    token_points = [
        (float(v.version), float(v.metrics["tokens"]))
        for v in trained
        if isinstance(v.metrics.get("tokens"), (int, float))
    ]
    version_rows = [
        [
            td(f"v{v.version}", cls="live" if v.version == live.version else ""),
            td("" if v.parent is None else f"v{v.parent}"),
            td(when(v.created), cls="time"),
            td(len(v.feedback_ids), numeric=True),
            td(number(_loss(v.metrics)), numeric=True),
            td(number(v.metrics.get("grad_norm")), numeric=True),
            td(number(v.metrics.get("tokens")), numeric=True),
            td(v.engine),
            _guard_cell(v),
            td(number((v.verdict or {}).get("measures", {}).get("guard_seconds")), numeric=True),
        ]
        for v in reversed(versions)
    ]
    rollback_items = "".join(
        f"<li>{esc(when(r.created))}: v{r.from_version} → v{r.to_version}</li>" for r in rollbacks
    )
    charts = chart(loss_points, title="distill loss of each update") + chart(
        token_points, title="response tokens learned from", color="#0c6b58"
    )
    body = (
        f"<section><h2>{esc(adapter_id)}</h2>"
        + stats(
            {
                "live version": f"v{live.version}",
                "versions kept": len(versions),
                "feedback": len(events),
                "LoRA rank": live.lora.get("rank", ""),
            }
        )
        + f"<p class=muted>base model {esc(live.base_model)}</p></section>"
        f"<section><h2>Learning</h2><div class=charts>{charts}</div></section>"
        "<section><h2>Versions</h2>"
        + table(
            "versions",
            (
                "version",
                "parent",
                "created (UTC)",
                "feedback",
                "loss",
                "grad norm",
                "tokens",
                "engine",
                "guard",
                "guard s",
            ),
            version_rows,
            empty="No versions.",
        )
        + f"<h2 style='margin-top:12px'>Lineage</h2>{_lineage(versions, live.version)}"
        + (f"<h2>Rollbacks</h2><ul>{rollback_items}</ul>" if rollback_items else "")
        + "</section><section><h2>Feedback jobs</h2>"
        + table(
            "jobs",
            ("job", "accepted (UTC)", *_JOB_HEADERS),
            _job_rows(jobs, with_adapter=False),
            empty="No feedback jobs yet.",
        )
        + "</section><section><h2>Feedback</h2>"
        + table(
            "feedback",
            ("received (UTC)", *_FEEDBACK_HEADERS),
            _feedback_rows(events, with_adapter=False),
            empty="No feedback yet.",
        )
        + "</section>"
        + followups_section(state, adapter_id)
    )
    return page(f"{adapter_id} · CLaaS", body, who=_who(caller))


# ------------------------------------------------------------------------- routes


@router.get("/dashboard")
async def dashboard(
    request: Request, key: Annotated[str | None, Query(max_length=512)] = None
) -> Response:
    """The overview: adapters with their live version and loss trend, recent feedback."""
    try:
        caller, remember = _authenticate(request, key)
    except Unauthorized as exc:
        return _login_page(str(exc))
    content = await run_in_threadpool(_overview, get_state(request), caller)
    return _remember(_html(content), request, remember)


@router.get("/dashboard/adapters/{namespace}/{name}")
async def adapter_page(
    request: Request,
    namespace: str,
    name: str,
    key: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """One adapter: learning charts, versions, lineage, rollbacks and feedback."""
    try:
        caller, remember = _authenticate(request, key)
    except Unauthorized as exc:
        return _login_page(str(exc))
    try:
        adapter_id = caller.require(f"{namespace}/{name}")
        content = await run_in_threadpool(_adapter_page, get_state(request), caller, adapter_id)
    except ClaasError as exc:
        status, body = describe(exc)
        message = (
            f"<section><h2>Error {status}</h2><p>{esc(body['error']['message'])}</p></section>"
        )
        return _html(page("CLaaS dashboard: error", message, who=_who(caller)), status=status)
    return _remember(_html(content), request, remember)


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    """The login form's target: check the key, set the cookie, go to the overview."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0]
    try:
        get_state(request).keyring.authenticate(key)
    except Unauthorized as exc:
        return _login_page(str(exc))
    response = RedirectResponse("/dashboard", status_code=303)
    return _remember(response, request, key)


@router.get("/dashboard/logout")
async def logout() -> Response:
    """Forget the cookie."""
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response
