"""The adapter-store protocol: what the learner needs of wherever versions live."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from claas.errors import NotFound, StorageError
from claas.types import AdapterSummary, AdapterVersion, LoraSpec

__all__ = ["AdapterStore", "WriteFn", "summarize", "summarize_all"]

WriteFn = Callable[[Path], None]
"""Writes a version's files into the directory it is given."""


@runtime_checkable
class AdapterStore(Protocol):
    """Where adapter versions live; :class:`LocalAdapterStore` documents the contract."""

    def create(
        self,
        adapter_id: str,
        *,
        base_model: str,
        lora: LoraSpec,
        write: WriteFn,
        engine: str = "local",
    ) -> AdapterVersion: ...

    def publish(
        self,
        adapter_id: str,
        *,
        parent: int,
        write: WriteFn,
        distill_config: Mapping[str, Any] | None = None,
        feedback_ids: Sequence[str] = (),
        metrics: Mapping[str, float] | None = None,
        engine: str = "local",
        live: bool = True,
    ) -> AdapterVersion: ...

    def judge(
        self, adapter_id: str, version: int, verdict: Mapping[str, Any], *, go_live: bool
    ) -> AdapterVersion: ...

    def guard_probes(self, adapter_id: str) -> list[dict[str, Any]]: ...

    def set_guard_probes(
        self, adapter_id: str, probes: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]: ...

    def get(self, adapter_id: str, version: int | None = None) -> AdapterVersion: ...

    def latest_version(self, adapter_id: str) -> int: ...

    def versions(self, adapter_id: str) -> list[AdapterVersion]: ...

    def rollback(self, adapter_id: str, version: int, *, force: bool = False) -> AdapterVersion: ...

    def export(self, adapter_id: str, version: int | None, dest: Path) -> Path: ...

    def delete(self, adapter_id: str) -> None: ...

    def list_adapters(self, namespace: str | None = None) -> list[str]: ...

    def exists(self, adapter_id: str) -> bool: ...


def summarize(store: AdapterStore, adapter_id: str) -> AdapterSummary:
    """An adapter's live version and version count; a damaged ``LATEST`` is reported, not raised.

    Raises:
        AdapterNotFound: If the adapter does not exist.
    """
    versions = store.versions(adapter_id)
    try:
        live: AdapterVersion | None = store.get(adapter_id)
        error = None
    except StorageError as exc:
        live, error = None, str(exc)
    return AdapterSummary(adapter_id=adapter_id, live=live, versions=len(versions), error=error)


def summarize_all(store: AdapterStore, namespaces: Collection[str] | None) -> list[AdapterSummary]:
    """:func:`summarize` of every adapter (of these namespaces; ``None``: all).

    An adapter deleted while listing is left out.
    """
    if namespaces is None:
        ids = store.list_adapters()
    else:
        ids = [a for ns in sorted(set(namespaces)) for a in store.list_adapters(ns)]
    summaries = []
    for adapter_id in ids:
        with contextlib.suppress(NotFound):  # deleted since it was listed
            summaries.append(summarize(store, adapter_id))
    return summaries
