"""``GuardSettings``, the ``[guard]`` section of :class:`claas.config.Settings`.

Kept in a module of its own so the settings module stays small; it is
re-exported as ``claas.config.GuardSettings``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

import attrs

from claas import _config_sources as sources

__all__ = ["GUARD_MODES", "GuardMode", "GuardSettings"]

GuardMode = Literal["off", "probes", "strict"]
GUARD_MODES: tuple[str, ...] = get_args(GuardMode)


def _check(low: float, high: float, rule: str, *, integer: bool = False) -> Any:
    """A validator of a number in ``[low, high]`` naming ``guard.<field>`` when it fails."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            raise sources.error(f"guard.{attribute.name}", value, rule)

    return check


def _mode(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in GUARD_MODES:
        raise sources.error("guard.mode", value, f"must be one of {GUARD_MODES}")


@attrs.frozen(kw_only=True)
class GuardSettings:
    """The check of a candidate version before it goes live (``settings.guard``).

    See :mod:`claas.guard`. Flat names: ``guard_mode``, ``guard_max_probe_drop``, ...

    Attributes:
        mode: ``off`` (publish every finite update), ``probes`` (capability and
            the adapter's own probes, degenerate answers) or ``strict`` (also no
            probe lost at all, and drift of the parent's answers' logprob).
        max_probe_drop: Largest fraction of the probes the parent passed that
            the candidate may fail (``probes`` mode).
        max_degenerate: Largest fraction of empty, stub or looping answers.
        max_drift: Largest drop, in nats per token, of the mean logprob the
            candidate gives the parent's answers (``strict`` mode).
        max_tokens: Answer length of each probe (greedy).
    """

    section: ClassVar[str] = "guard"
    flat_prefix: ClassVar[str] = "guard_"

    mode: GuardMode = attrs.field(default="probes", validator=_mode)
    max_probe_drop: float = attrs.field(
        default=0.25, validator=_check(0, 1, "must be a number from 0 to 1")
    )
    max_degenerate: float = attrs.field(
        default=0.25, validator=_check(0, 1, "must be a number from 0 to 1")
    )
    max_drift: float = attrs.field(
        default=1.0, validator=_check(1e-9, 1e6, "must be a positive number of nats")
    )
    max_tokens: int = attrs.field(
        default=12, validator=_check(1, 1e9, "must be an integer >= 1", integer=True)
    )
