"""The follow-up routes: per-adapter settings and the recorded follow-up links.

Follow-ups are recognised inside ``Learner.chat`` (any chat route gets them);
these routes only read the links and change whether an adapter learns from them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from claas import AdapterSettings
from claas_server.deps import Caller, State
from claas_server.errors import ERROR_RESPONSES
from claas_server.schemas_followups import (
    AdapterSettingsInfo,
    AdapterSettingsUpdate,
    FollowUpInfo,
    FollowUpList,
)

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES, tags=["follow-ups"])


def _settings_info(adapter_id: str, settings: AdapterSettings) -> AdapterSettingsInfo:
    return AdapterSettingsInfo(adapter_id=adapter_id, **settings.to_dict())


@router.patch(
    "/v1/adapters/{namespace}/{name}",
    response_model=AdapterSettingsInfo,
    summary="Change an adapter's settings",
)
def configure_adapter(
    namespace: str, name: str, body: AdapterSettingsUpdate, state: State, caller: Caller
) -> AdapterSettingsInfo:
    """Change the settings named in the body (``null`` keeps one); return them all."""
    adapter_id = caller.require(f"{namespace}/{name}")
    settings = state.learner.configure_adapter(
        adapter_id, learn_from_followups=body.learn_from_followups
    )
    return _settings_info(adapter_id, settings)


@router.get(
    "/v1/adapters/{namespace}/{name}/settings",
    response_model=AdapterSettingsInfo,
    summary="An adapter's settings",
)
def adapter_settings(
    namespace: str, name: str, state: State, caller: Caller
) -> AdapterSettingsInfo:
    """Whether the adapter learns from follow-ups."""
    adapter_id = caller.require(f"{namespace}/{name}")
    state.learner.adapter_summary(adapter_id)  # AdapterNotFound for an unknown adapter
    return _settings_info(adapter_id, state.learner.adapter_settings(adapter_id))


@router.get("/v1/followups", response_model=FollowUpList, summary="Recorded follow-ups")
def list_followups(
    state: State,
    caller: Caller,
    adapter_id: Annotated[str | None, Query(max_length=256)] = None,
    completion_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FollowUpList:
    """Follow-up links the key may see, newest first (of one adapter or one completion)."""
    if adapter_id is not None:
        caller.require(adapter_id)
    links = state.learner.followups(
        adapter_id, completion_id=completion_id, namespaces=caller.namespaces, limit=limit
    )
    return FollowUpList(data=[FollowUpInfo(**f.to_dict()) for f in links])
