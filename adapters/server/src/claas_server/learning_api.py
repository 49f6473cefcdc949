"""The learning routes: adapter lifecycle and scoring.

Feedback, which becomes a durable job, has its own module: :mod:`claas_server.jobs_api`.

Each route checks the caller's namespaces, then makes exactly one ``Learner``
call, which validates everything before it changes anything. Routes are plain
``def`` functions, so FastAPI runs the synchronous learner in its threadpool.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from claas import AdapterSummary, AdapterVersion
from claas.types import DEFAULT_TARGET_MODULES
from claas_server.deps import (
    Caller,
    ServerState,
    State,
    finite,
    resolve_model,
    store_relative,
)
from claas_server.errors import ERROR_RESPONSES
from claas_server.schemas import (
    AdapterCreate,
    AdapterInfo,
    AdapterList,
    AdapterVersionInfo,
    DeletedAdapter,
    GuardProbes,
    RollbackInfo,
    RollbackRequest,
    ScoreRequest,
    ScoreResponse,
    VersionList,
)

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


def _adapter_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _version_info(version: AdapterVersion, live: int) -> AdapterVersionInfo:
    return AdapterVersionInfo(
        adapter_id=version.adapter_id,
        version=version.version,
        parent=version.parent,
        created=version.created,
        base_model=version.base_model,
        lora=dict(version.lora),
        distill_config=dict(version.distill_config) if version.distill_config else None,
        feedback_ids=list(version.feedback_ids),
        metrics=finite(version.metrics),
        engine=version.engine,
        live=version.version == live,
        rejected=version.rejected,
        verdict=_verdict(version),
    )


def _verdict(version: AdapterVersion) -> dict[str, Any] | None:
    if version.verdict is None:
        return None
    return {**version.verdict, "measures": finite(version.verdict.get("measures") or {})}


# ----------------------------------------------------------------------- adapters


@router.post(
    "/v1/adapters",
    response_model=AdapterVersionInfo,
    status_code=201,
    tags=["adapters"],
    summary="Create an adapter (version 0 equals the base model)",
)
def create_adapter(body: AdapterCreate, state: State, caller: Caller) -> AdapterVersionInfo:
    """Create ``adapter_id``; with ``exist_ok`` an existing one is returned as it is."""
    caller.require(body.adapter_id)
    version = state.learner.init_adapter(
        body.adapter_id,
        rank=body.rank,
        alpha=body.alpha,
        dropout=body.dropout,
        target_modules=tuple(body.target_modules or DEFAULT_TARGET_MODULES),
        exist_ok=body.exist_ok,
        learn_from_followups=body.learn_from_followups,
    )
    return _version_info(version, version.version)


def _adapter_info(state: ServerState, summary: AdapterSummary) -> AdapterInfo:
    live = summary.live
    error = store_relative(state, summary.error) if summary.error is not None else None
    return AdapterInfo(
        id=summary.adapter_id,
        live_version=live.version if live else None,
        base_model=live.base_model if live else None,
        created=live.created if live else None,
        versions=summary.versions,
        live=_version_info(live, live.version) if live else None,
        error=error,
        learn_from_followups=state.learner.adapter_settings(
            summary.adapter_id
        ).learn_from_followups,
    )


@router.get("/v1/adapters", response_model=AdapterList, tags=["adapters"], summary="List adapters")
def list_adapters(
    state: State,
    caller: Caller,
    namespace: Annotated[str | None, Query(max_length=64)] = None,
) -> AdapterList:
    """The adapters the key may see (optionally of one namespace)."""
    namespaces: Collection[str] | None = caller.namespaces
    if namespace:
        allowed = caller.namespaces is None or namespace in caller.namespaces
        namespaces = {namespace} if allowed else set()
    summaries = state.learner.adapter_summaries(namespaces)
    return AdapterList(data=[_adapter_info(state, s) for s in summaries])


@router.get(
    "/v1/adapters/{namespace}/{name}",
    response_model=AdapterInfo,
    tags=["adapters"],
    summary="One adapter",
)
def get_adapter(namespace: str, name: str, state: State, caller: Caller) -> AdapterInfo:
    """The adapter's live version and how many versions are retained."""
    adapter_id = caller.require(_adapter_id(namespace, name))
    return _adapter_info(state, state.learner.adapter_summary(adapter_id))


@router.get(
    "/v1/adapters/{namespace}/{name}/versions",
    response_model=VersionList,
    tags=["adapters"],
    summary="Versions and lineage of an adapter",
)
def list_versions(namespace: str, name: str, state: State, caller: Caller) -> VersionList:
    """Every retained version (oldest first) with its parent, metrics and feedback ids."""
    adapter_id = caller.require(_adapter_id(namespace, name))
    live = state.learner.current_version(adapter_id).version
    versions = state.learner.versions(adapter_id)
    return VersionList(
        adapter_id=adapter_id,
        live_version=live,
        data=[_version_info(v, live) for v in versions],
        events=[RollbackInfo(**r.to_dict()) for r in state.learner.rollbacks(adapter_id)],
    )


@router.post(
    "/v1/adapters/{namespace}/{name}/rollback",
    response_model=AdapterVersionInfo,
    tags=["adapters"],
    summary="Serve an older version again",
)
def rollback(
    namespace: str, name: str, body: RollbackRequest, state: State, caller: Caller
) -> AdapterVersionInfo:
    """Move the live pointer to ``version``; later feedback builds on it."""
    adapter_id = caller.require(_adapter_id(namespace, name))
    target = state.learner.rollback(adapter_id, body.version, force=body.force)
    return _version_info(target, target.version)


@router.get(
    "/v1/adapters/{namespace}/{name}/probes",
    response_model=GuardProbes,
    tags=["adapters"],
    summary="The adapter's own guard probes",
)
def get_probes(namespace: str, name: str, state: State, caller: Caller) -> GuardProbes:
    """Questions every new version must still answer before it goes live."""
    adapter_id = caller.require(_adapter_id(namespace, name))
    return GuardProbes.model_validate({"probes": state.learner.guard_probes(adapter_id)})


@router.put(
    "/v1/adapters/{namespace}/{name}/probes",
    response_model=GuardProbes,
    tags=["adapters"],
    summary="Replace the adapter's own guard probes",
)
def put_probes(
    namespace: str, name: str, body: GuardProbes, state: State, caller: Caller
) -> GuardProbes:
    """A version that stops answering one of these (its parent did) is rejected."""
    adapter_id = caller.require(_adapter_id(namespace, name))
    stored = state.learner.set_guard_probes(adapter_id, [p.model_dump() for p in body.probes])
    return GuardProbes.model_validate({"probes": stored})


@router.get(
    "/v1/adapters/{namespace}/{name}/export",
    tags=["adapters"],
    summary="Download one version as a zip",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The version's files"}},
)
def export_adapter(
    namespace: str,
    name: str,
    state: State,
    caller: Caller,
    version: Annotated[int | None, Query(ge=0, description="Default: the live version")] = None,
) -> FileResponse:
    """A zip of the version's PEFT files and manifest."""
    adapter_id = caller.require(_adapter_id(namespace, name))
    scratch = Path(tempfile.mkdtemp(prefix="export-"))
    try:
        path = state.learner.export(adapter_id, version, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return FileResponse(
        path,
        media_type="application/zip",
        filename=path.name,
        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
    )


@router.delete(
    "/v1/adapters/{namespace}/{name}",
    response_model=DeletedAdapter,
    tags=["adapters"],
    summary="Delete an adapter and all its versions",
)
def delete_adapter(namespace: str, name: str, state: State, caller: Caller) -> DeletedAdapter:
    """Delete the adapter; records of its completions and feedback stay for audit."""
    adapter_id = caller.require(_adapter_id(namespace, name))
    state.learner.delete_adapter(adapter_id)
    return DeletedAdapter(id=adapter_id)


# -------------------------------------------------------------------------- score


@router.post(
    "/v1/score", response_model=ScoreResponse, tags=["learning"], summary="Score a response"
)
def score(body: ScoreRequest, state: State, caller: Caller) -> ScoreResponse:
    """Per-token logprobs of ``response`` as the answer to ``messages``."""
    adapter = resolve_model(body.model, caller, state.settings)
    result = state.learner.score(adapter, [m.to_core() for m in body.messages], body.response)
    logprobs = list(finite({str(i): lp for i, lp in enumerate(result.logprobs)}).values())
    total = finite({"t": result.total, "m": result.mean})
    return ScoreResponse(
        adapter_id=result.adapter_id,
        adapter_version=result.adapter_version,
        token_ids=list(result.token_ids),
        logprobs=logprobs,
        total=total["t"],
        mean=total["m"],
    )
