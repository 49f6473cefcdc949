"""The guard's calls of :class:`claas.Client`: forcing a rejected version, own probes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from claas.types import AdapterVersion

__all__ = ["GuardCalls"]


class GuardCalls:
    """Mixed into :class:`claas.Client` (it provides ``_json``, ``_adapter_path``, ``rollback``)."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError  # provided by Client

    def _adapter_path(self, adapter_id: str, *parts: str) -> str:
        raise NotImplementedError  # provided by Client

    def rollback(self, adapter_id: str, version: int, *, force: bool = False) -> AdapterVersion:
        raise NotImplementedError  # provided by Client

    def force(self, adapter_id: str, version: int) -> AdapterVersion:
        """Publish a version the guard rejected."""
        return self.rollback(adapter_id, version, force=True)

    def guard_probes(self, adapter_id: str) -> list[dict[str, Any]]:
        """The adapter's own guard probes, ``{"prompt", "expect"}`` each."""
        return list(self._json("GET", self._adapter_path(adapter_id, "probes"))["probes"])

    def set_guard_probes(
        self, adapter_id: str, probes: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Replace the adapter's own guard probes (``PUT .../probes``)."""
        path, body = self._adapter_path(adapter_id, "probes"), {"probes": [*map(dict, probes)]}
        return list(self._json("PUT", path, json=body)["probes"])
