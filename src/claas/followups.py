"""Follow-ups: the user's next message after an answer CLaaS served.

When a chat request continues a conversation whose earlier assistant turn is
exactly a completion CLaaS served for the same adapter (same preceding
messages, same assistant text), the user message right after that turn is the
completion's *follow-up*. The match is exact, never fuzzy: both sides are
reduced to a :func:`conversation_key`, a SHA-256 digest of the adapter id, the
messages before the answer and the answer's visible text, and looked up in an
index. The adapter id is part of the digest, so a completion of another
adapter (another tenant's namespace) can never match.

Records of this module cross module boundaries (records, learner, server,
client), so they live here rather than in the private modules that compute them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import attrs

from claas.errors import InvalidConfig
from claas.types import ChatMessage

__all__ = ["AdapterSettings", "FollowUp", "conversation_key", "followup_id"]


def conversation_key(adapter_id: str, messages: Sequence[ChatMessage], answer: str) -> str:
    """The digest a served answer and a resent conversation are matched by.

    Args:
        adapter_id: The adapter that served the answer (``namespace/name``).
        messages: The conversation before the answer, as the client sent it.
        answer: The answer's visible text (what the client received).

    Returns:
        64 hex digits.
    """
    canonical = json.dumps(
        [adapter_id, [[m.role, m.content] for m in messages], answer],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def followup_id(completion_id: str, text: str) -> str:
    """The id of the follow-up ``text`` to ``completion_id``: the same however often it is sent."""
    digest = hashlib.sha256(f"{completion_id}\0{text}".encode()).hexdigest()
    return "fu-" + digest[:32]


@attrs.frozen(kw_only=True)
class FollowUp:
    """A user message that continued a conversation after a served completion.

    Attributes:
        id: ``fu-...``, derived from the completion id and the text
            (:func:`followup_id`), so a resent conversation finds the same link.
        completion_id: The completion it follows.
        adapter_id: The adapter that served the completion.
        text: The user's next message.
        created: Unix time it was first seen.
        job_id: The feedback job it became (``learn_from_followups`` on), if any.
        error: Why no job was submitted although the adapter asked for one.
    """

    id: str
    completion_id: str
    adapter_id: str
    text: str
    created: float
    job_id: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return attrs.asdict(self)


def _check_bool(_: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidConfig(f"AdapterSettings.{attribute.name}={value!r}: must be true or false")


@attrs.frozen(kw_only=True)
class AdapterSettings:
    """Per-adapter behaviour, stored in the records (one JSON document per adapter).

    Attributes:
        learn_from_followups: Turn each recognised follow-up into a feedback job
            on the completion it follows (the follow-up is the hindsight text).
    """

    learn_from_followups: bool = attrs.field(default=False, validator=_check_bool)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterSettings:
        """Read a stored document; keys this version does not know are ignored."""
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
