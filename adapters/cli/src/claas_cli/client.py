"""What chat, feedback and version commands need, in-process or from a server.

:class:`LocalClient` calls a :class:`~claas.learner.Learner` directly;
:class:`claas_cli.remote.RemoteClient` speaks the server's HTTP API. Both
return the small records below, so commands print the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from claas import AdapterVersion, FeedbackResult
from claas.types import DEFAULT_TARGET_MODULES

if TYPE_CHECKING:
    from claas.learner import Learner

__all__ = ["AdapterSummary", "Answer", "Client", "LocalClient", "Update", "VersionInfo"]

Messages = Sequence[Mapping[str, str]]
TextSink = Callable[[str], None]


@attrs.frozen(kw_only=True)
class Answer:
    """One served chat answer; ``id`` is what feedback refers to."""

    id: str
    text: str
    adapter_id: str | None
    adapter_version: int | None
    finish_reason: str = "stop"


@attrs.frozen(kw_only=True)
class Update:
    """The version a feedback update published."""

    adapter_id: str
    version: int
    parent_version: int | None
    feedback_ids: tuple[str, ...] = ()
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    timings: Mapping[str, float] = attrs.field(factory=dict)

    @classmethod
    def from_result(cls, result: FeedbackResult) -> Update:
        """Convert the core's FeedbackResult."""
        return cls(
            adapter_id=result.adapter_id,
            version=result.version,
            parent_version=result.parent_version,
            feedback_ids=tuple(result.feedback_ids),
            metrics=dict(result.metrics),
            timings=dict(result.timings),
        )


@attrs.frozen(kw_only=True)
class VersionInfo:
    """One retained adapter version; ``live`` marks the one chats are served by."""

    adapter_id: str
    version: int
    parent: int | None
    created: float
    live: bool
    base_model: str = ""
    feedback_ids: tuple[str, ...] = ()
    metrics: Mapping[str, float] = attrs.field(factory=dict)

    @classmethod
    def from_version(cls, version: AdapterVersion, *, live: bool) -> VersionInfo:
        """Convert the core's AdapterVersion."""
        return cls(
            adapter_id=version.adapter_id,
            version=version.version,
            parent=version.parent,
            created=version.created,
            live=live,
            base_model=version.base_model,
            feedback_ids=tuple(version.feedback_ids),
            metrics=dict(version.metrics),
        )


@attrs.frozen(kw_only=True)
class AdapterSummary:
    """One adapter as ``adapters ls`` shows it."""

    adapter_id: str
    live_version: int
    versions: int
    base_model: str
    updated: float


class Client(Protocol):
    """The operations the REPL and the remote-capable commands use."""

    def chat(
        self,
        adapter_id: str,
        messages: Messages,
        *,
        on_text: TextSink | None = None,
        **sampling: Any,
    ) -> Answer:
        """Answer ``messages`` with the adapter's live version (``on_text`` gets deltas)."""
        ...

    def feedback(
        self, completion_id: str, text: str, *, config: Mapping[str, Any] | None = None
    ) -> Update:
        """Learn from feedback on a served answer; return once the new version serves."""
        ...

    def feedback_raw(
        self,
        adapter_id: str,
        messages: Messages,
        response: str,
        text: str,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> Update:
        """Learn from feedback on a response CLaaS did not serve."""
        ...

    def init_adapter(
        self,
        adapter_id: str,
        *,
        rank: int,
        alpha: float,
        dropout: float,
        target_modules: Sequence[str] | None,
        exist_ok: bool,
    ) -> VersionInfo:
        """Create an adapter whose version 0 equals the base model."""
        ...

    def adapters(self, namespace: str | None = None) -> list[AdapterSummary]:
        """The existing adapters, sorted by id."""
        ...

    def delete_adapter(self, adapter_id: str) -> None:
        """Delete an adapter and all its versions."""
        ...

    def versions(self, adapter_id: str) -> list[VersionInfo]:
        """Every retained version, oldest first."""
        ...

    def rollback(self, adapter_id: str, version: int) -> VersionInfo:
        """Serve an older version again."""
        ...

    def export(self, adapter_id: str, version: int | None, dest: Path) -> Path:
        """Write a zip of one version (``None``: the live one) into or as ``dest``."""
        ...

    def close(self) -> None:
        """Release what the client holds."""
        ...


class LocalClient:
    """A :class:`Client` over an in-process Learner (which it closes)."""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner

    def chat(
        self,
        adapter_id: str,
        messages: Messages,
        *,
        on_text: TextSink | None = None,
        **sampling: Any,
    ) -> Answer:
        """Answer with the live version, streaming text to ``on_text`` if given."""
        if on_text is None:
            completion = self.learner.chat(adapter_id, messages, **sampling)
        else:
            stream = self.learner.chat_stream(adapter_id, messages, **sampling)
            for delta in stream:
                on_text(delta)
            assert stream.completion is not None, "a finished stream records its completion"
            completion = stream.completion
        return Answer(
            id=completion.id,
            text=completion.text,
            adapter_id=completion.adapter_id,
            adapter_version=completion.adapter_version,
            finish_reason=completion.finish_reason,
        )

    def feedback(
        self, completion_id: str, text: str, *, config: Mapping[str, Any] | None = None
    ) -> Update:
        """Run the update in this process."""
        return Update.from_result(self.learner.feedback(completion_id, text, config=config))

    def feedback_raw(
        self,
        adapter_id: str,
        messages: Messages,
        response: str,
        text: str,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> Update:
        """Run the update on a response given as text."""
        result = self.learner.feedback(
            text=text, messages=messages, response=response, adapter_id=adapter_id, config=config
        )
        return Update.from_result(result)

    def init_adapter(
        self,
        adapter_id: str,
        *,
        rank: int,
        alpha: float,
        dropout: float,
        target_modules: Sequence[str] | None,
        exist_ok: bool,
    ) -> VersionInfo:
        """Create the adapter in the local store."""
        version = self.learner.init_adapter(
            adapter_id,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            target_modules=tuple(target_modules or DEFAULT_TARGET_MODULES),
            exist_ok=exist_ok,
        )
        live = self.learner.current_version(adapter_id).version
        return VersionInfo.from_version(version, live=version.version == live)

    def adapters(self, namespace: str | None = None) -> list[AdapterSummary]:
        """Adapters in the local store."""
        found = []
        for adapter_id in self.learner.adapters(namespace):
            live = self.learner.current_version(adapter_id)
            found.append(
                AdapterSummary(
                    adapter_id=adapter_id,
                    live_version=live.version,
                    versions=len(self.learner.versions(adapter_id)),
                    base_model=live.base_model,
                    updated=live.created,
                )
            )
        return found

    def delete_adapter(self, adapter_id: str) -> None:
        """Delete from the local store."""
        self.learner.delete_adapter(adapter_id)

    def versions(self, adapter_id: str) -> list[VersionInfo]:
        """Versions from the local store."""
        live = self.learner.current_version(adapter_id).version
        return [
            VersionInfo.from_version(v, live=v.version == live)
            for v in self.learner.versions(adapter_id)
        ]

    def rollback(self, adapter_id: str, version: int) -> VersionInfo:
        """Move ``latest`` back in the local store."""
        return VersionInfo.from_version(self.learner.rollback(adapter_id, version), live=True)

    def export(self, adapter_id: str, version: int | None, dest: Path) -> Path:
        """Zip the version from the local store."""
        return self.learner.export(adapter_id, version, dest)

    def close(self) -> None:
        """Close the Learner."""
        self.learner.close()
