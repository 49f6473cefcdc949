"""The guard's use cases of :class:`claas.Learner`: forcing a rejected version, own probes.

A mixin so that ``learner.py`` keeps to the use cases every backend shares; the
:class:`claas.Client` has the same methods over HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from claas.storage import AdapterStore
from claas.types import AdapterVersion, validate_adapter_id

__all__ = ["GuardUseCases"]


class GuardUseCases:
    """Mixed into :class:`claas.Learner`, which provides ``_store`` and ``rollback``."""

    _store: AdapterStore

    def rollback(self, adapter_id: str, version: int, *, force: bool = False) -> AdapterVersion:
        raise NotImplementedError  # provided by Learner

    def force(self, adapter_id: str, version: int) -> AdapterVersion:
        """Publish a version the guard rejected (it goes live; its verdict records the force)."""
        return self.rollback(adapter_id, version, force=True)

    def guard_probes(self, adapter_id: str) -> list[dict[str, Any]]:
        """The adapter's own guard probes ("must still answer X"), ``{prompt, expect}`` each."""
        return self._store.guard_probes(validate_adapter_id(adapter_id))

    def set_guard_probes(
        self, adapter_id: str, probes: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Replace the adapter's own guard probes: an answer must contain one of ``expect``."""
        return self._store.set_guard_probes(validate_adapter_id(adapter_id), probes)
