"""The ``followups`` section of :class:`claas.config.Settings`: learning from follow-ups."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from claas import _config_sources as sources

__all__ = ["FOLLOWUP_SKIP_BELOW", "FOLLOWUP_STEPS", "FollowupSettings"]

# Mean per-token divergence (the SDPO distill loss, no training step) between the
# teacher shown a follow-up and the teacher shown the neutral reference reply,
# under which the follow-up teaches nothing. On the bundled model "Thanks. Next
# question." measured 0.0006 and 0.0012, "That's too long. One sentence,
# please." 0.0027 and 0.0025 (docs/concepts/followups.md).
FOLLOWUP_SKIP_BELOW = 0.0018
# Two optimizer steps on a follow-up's answer: a reply teaches less per update than
# explicit feedback (its template asks less), and with one step the simulated user of
# tests/test_followup_learning.py shortened held-out answers to 0.41-0.56 of their
# length in five runs, with two to 0.20 and 0.36 (docs/eval.md). Neutral follow-ups
# are skipped before any step, so they do not train twice as hard.
FOLLOWUP_STEPS = 2


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise sources.error(f"followups.{attribute.name}", value, "must be a number >= 0")


def _steps(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise sources.error(f"followups.{attribute.name}", value, "must be an integer from 1 to 64")


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
        followup_steps: Optimizer steps of a follow-up's update on its one
            answer (``DistillConfig.steps``).
    """

    section: ClassVar[str] = "followups"
    flat_prefix: ClassVar[str] = ""

    learn_from_followups: bool = False
    followup_template: str | None = attrs.field(default=None, validator=_check_template)
    followup_skip_below: float = attrs.field(default=FOLLOWUP_SKIP_BELOW, validator=_non_negative)
    followup_reference: str = "OK."
    followup_steps: int = attrs.field(default=FOLLOWUP_STEPS, validator=_steps)
