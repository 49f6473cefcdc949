"""The follow-up calls of :class:`claas.Client` (adapter settings and follow-up links)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from claas.followups import AdapterSettings, FollowUp
from claas.types import split_adapter_id

__all__ = ["FollowupCalls"]

_SETTINGS_FIELDS = ("learn_from_followups",)
_MAX_LIST = 500  # the server's largest page


class FollowupCalls:
    """Mixed into :class:`claas.Client`, which provides ``_json``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError  # provided by Client

    def configure_adapter(
        self, adapter_id: str, *, learn_from_followups: bool | None = None
    ) -> AdapterSettings:
        """Change an adapter's settings (``PATCH /v1/adapters/{namespace}/{name}``).

        Raises:
            AdapterNotFound: If the adapter does not exist.
            InvalidConfig: If a value has the wrong type.
        """
        namespace, name = split_adapter_id(adapter_id)
        body = {"learn_from_followups": learn_from_followups}
        return _settings(self._json("PATCH", f"/v1/adapters/{namespace}/{name}", json=body))

    def adapter_settings(self, adapter_id: str) -> AdapterSettings:
        """An adapter's settings (``GET /v1/adapters/{namespace}/{name}/settings``)."""
        namespace, name = split_adapter_id(adapter_id)
        return _settings(self._json("GET", f"/v1/adapters/{namespace}/{name}/settings"))

    def followups(
        self,
        adapter_id: str | None = None,
        *,
        completion_id: str | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FollowUp]:
        """Recorded follow-ups the key may see, newest first (``GET /v1/followups``)."""
        params: dict[str, Any] = {"limit": _MAX_LIST if namespaces is not None else limit}
        if adapter_id is not None:
            params["adapter_id"] = adapter_id
        if completion_id is not None:
            params["completion_id"] = completion_id
        data = self._json("GET", "/v1/followups", params=params)["data"]
        links = [FollowUp(**{k: v for k, v in item.items() if k != "object"}) for item in data]
        if namespaces is not None:
            links = [f for f in links if f.adapter_id.split("/", 1)[0] in namespaces]
        return links[:limit]


def _settings(data: dict[str, Any]) -> AdapterSettings:
    return AdapterSettings(**{k: data[k] for k in _SETTINGS_FIELDS})
