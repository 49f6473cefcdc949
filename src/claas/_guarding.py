"""The guard inside the update pipeline: judge a saved candidate, then let it go live or not.

Kept apart from :mod:`claas._updates` so the pipeline only asks the guard to load a
saved candidate where it will be asked, and then for its verdict; the store holds the
answer: the verdict file beside the version's manifest, and ``LATEST`` moved
only for a candidate that passed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from claas._components import Components
from claas.config import Settings
from claas.errors import UpdateRejected
from claas.guard.gate import Gate
from claas.storage import AdapterStore
from claas.types import AdapterVersion, FeedbackResult

__all__ = ["CandidateLoader", "Guarding", "Rejected"]


@runtime_checkable
class CandidateLoader(Protocol):
    """An inference backend that can load a version before it is live (local inference)."""

    def prepare(self, version: AdapterVersion) -> None:
        """Load ``version`` beside the live one, superseding nothing."""
        ...


class Rejected(UpdateRejected):
    """An update the guard rejected, with the result its jobs record (stays inside the learner)."""

    def __init__(self, message: str, result: FeedbackResult) -> None:
        super().__init__(message)
        self.result = result


class Guarding:
    """Judges candidates of one learner's updates (see the module docstring)."""

    def __init__(self, settings: Settings, *, store: AdapterStore, parts: Components) -> None:
        self._settings = settings
        self._store = store
        self._parts = parts
        self._gate = Gate(settings)

    @property
    def enabled(self) -> bool:
        """Whether candidates wait for a verdict (``guard.mode`` is not ``off``)."""
        return self._settings.guard.mode != "off"

    def prepare(self, candidate: AdapterVersion) -> None:
        """Load a saved candidate into the inference backend, if the guard will ask it.

        Serving it needs that load whether or not a guard runs (with the guard off,
        publishing does it), so the pipeline times it as ``load_seconds``, apart from
        the guard's own ``guard_seconds``.
        """
        if not self.enabled:
            return  # nothing will ask it (and the backend may not be built yet)
        backend = self._parts.inference
        if isinstance(backend, CandidateLoader):
            backend.prepare(candidate)

    def judge(self, parent: AdapterVersion, candidate: AdapterVersion) -> AdapterVersion:
        """Judge a saved candidate; it goes live if it passes. Returns it with its verdict."""
        if not self.enabled:
            return candidate
        verdict = self._gate.judge(
            self._parts.inference,
            self._parts.tokenizer,
            parent,
            candidate,
            self._store.guard_probes(candidate.adapter_id),
        )
        return self._store.judge(
            candidate.adapter_id, candidate.version, verdict.to_dict(), go_live=verdict.passed
        )

    def conclude(self, version: AdapterVersion) -> AdapterVersion:
        """Finish judging a version an interrupted update saved (a crash around its verdict)."""
        adapter_id = version.adapter_id
        if self._store.latest_version(adapter_id) >= version.version:
            return version
        if version.verdict is None:
            if not self.enabled or version.parent is None:
                return self._store.judge(adapter_id, version.version, _UNGUARDED, go_live=True)
            return self.judge(self._store.get(adapter_id, version.parent), version)
        if version.rejected:
            return version
        return self._store.judge(adapter_id, version.version, version.verdict, go_live=True)


_UNGUARDED = {"passed": True, "mode": "off", "reasons": []}


def rejection_message(version: AdapterVersion) -> str:
    """Why the guard rejected ``version``, as a job's error says it."""
    reasons = (version.verdict or {}).get("reasons") or ["no reason recorded"]
    return f"the guard rejected {version.ref}; the live version is unchanged: " + "; ".join(reasons)
