"""Request and response bodies of the follow-up routes (and a completion's follow-ups).

Kept apart from :mod:`claas_server.schemas`, which imports :class:`FollowUpInfo`
for ``CompletionRecord.followups``; the base configs are the same.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AdapterSettingsInfo", "AdapterSettingsUpdate", "FollowUpInfo", "FollowUpList"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdapterSettingsUpdate(_Request):
    """``PATCH /v1/adapters/{namespace}/{name}``: the settings to change (``null`` keeps one)."""

    learn_from_followups: bool | None = Field(
        default=None,
        description="Turn each recognised follow-up into a feedback job on the answer it follows.",
    )


class AdapterSettingsInfo(_Response):
    """An adapter's settings (``claas.AdapterSettings``)."""

    object: Literal["adapter.settings"] = "adapter.settings"
    adapter_id: str
    learn_from_followups: bool


class FollowUpInfo(_Response):
    """A user message that continued a conversation after a served completion."""

    id: str = Field(description="`fu-...`, the same however often the conversation is resent.")
    object: Literal["claas.followup"] = "claas.followup"
    completion_id: str = Field(description="The completion it follows.")
    adapter_id: str
    text: str = Field(description="The user's next message.")
    created: float = Field(description="When it was first seen.")
    job_id: str | None = Field(description="The feedback job it became, if the adapter learns.")
    error: str | None = Field(description="Why no job was submitted although one was asked for.")


class FollowUpList(_Response):
    object: Literal["list"] = "list"
    data: list[FollowUpInfo] = Field(description="Newest first.")
