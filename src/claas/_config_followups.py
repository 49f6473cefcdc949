"""The ``followups`` section of :class:`claas.config.Settings`: learning from follow-ups."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from claas import _config_sources as sources

__all__ = ["FOLLOWUP_SKIP_BELOW", "FollowupSettings"]

# Mean per-token divergence (the SDPO distill loss, no training step) between the
# teacher shown a follow-up and the teacher shown the neutral reference reply,
# under which the follow-up teaches nothing. On the bundled model "Thanks. Next
# question." measured 0.0006 and 0.0012, "That's too long. One sentence,
# please." 0.0027 and 0.0025 (docs/concepts/followups.md).
FOLLOWUP_SKIP_BELOW = 0.0018


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise sources.error(f"followups.{attribute.name}", value, "must be a number >= 0")


def _check_template(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    sources.check_template(attribute.name, value)


@attrs.frozen(kw_only=True)
class FollowupSettings:
    """Learning from follow-up messages (``settings.followups``); flat names have no prefix.

    Attributes:
        learn_from_followups: The ``learn_from_followups`` setting of adapters
            created without one (each adapter's own setting wins).
        followup_template: How a follow-up is shown to the teacher, with the
            fields ``{content}`` and ``{feedback}``; ``None`` uses
            :data:`claas.teacher.FOLLOWUP_TEMPLATE`.
        followup_skip_below: A follow-up job whose divergence, measured before
            training, is below this is ``skipped`` (no new version); 0 trains
            on every follow-up.
        followup_reference: The neutral reply the pre-check compares a
            follow-up with: the divergence is between the teacher shown the
            follow-up and the teacher shown this text (``""``: the student).
    """

    section: ClassVar[str] = "followups"
    flat_prefix: ClassVar[str] = ""

    learn_from_followups: bool = False
    followup_template: str | None = attrs.field(default=None, validator=_check_template)
    followup_skip_below: float = attrs.field(default=FOLLOWUP_SKIP_BELOW, validator=_non_negative)
    followup_reference: str = "OK."
