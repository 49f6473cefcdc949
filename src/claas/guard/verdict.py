"""The guard's decision: a candidate's answers against its parent's, and the thresholds.

Pure: no model, no store. :func:`decide` turns two :class:`Answers` and the
:class:`~claas.config.GuardSettings` into a :class:`Verdict`, so every rule is
tested on plain text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from claas.config import GuardSettings
from claas.guard.signals import degenerate_flags

__all__ = ["Answers", "Verdict", "decide"]

_SHOWN = 60


@attrs.frozen(kw_only=True)
class Answers:
    """What one version answered to the guard's probes, in probe order.

    Attributes:
        prompts: The probe questions.
        kinds: ``knowledge``, ``instruction`` or ``user`` (an adapter's own probe).
        texts: The answers.
        passed: Whether each answer passed its probe's check.
        anchor_logprob: Mean logprob per token of the parent's answers under
            this version (for the parent: of its own answers); ``None`` if not scored.
    """

    prompts: tuple[str, ...]
    kinds: tuple[str, ...]
    texts: tuple[str, ...]
    passed: tuple[bool, ...]
    anchor_logprob: float | None = None


@attrs.frozen(kw_only=True)
class Verdict:
    """Whether a candidate may go live, and why not.

    Attributes:
        passed: ``True``: it may go live.
        mode: The guard mode that judged it.
        reasons: Why it failed (empty when it passed).
        measures: What was measured (probe scores, degenerate fraction, drift, seconds).
        answers: The candidate's answer to each probe question.
    """

    passed: bool
    mode: str
    reasons: tuple[str, ...] = ()
    measures: Mapping[str, float] = attrs.field(factory=dict)
    answers: Mapping[str, str] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON-ready data (what the store keeps beside the manifest)."""
        return {
            "passed": self.passed,
            "mode": self.mode,
            "reasons": list(self.reasons),
            "measures": dict(self.measures),
            "answers": dict(self.answers),
        }


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN else flat[: _SHOWN - 3] + "..."


def _lost(parent: Answers, candidate: Answers, user: bool) -> tuple[list[int], int]:
    """The probes the parent passed and the candidate fails, and how many the parent passed."""
    mine = [i for i, kind in enumerate(parent.kinds) if (kind == "user") == user]
    held = [i for i in mine if parent.passed[i]]
    return [i for i in held if not candidate.passed[i]], len(held)


def _degenerate(answers: Answers) -> tuple[float, list[str]]:
    # An answer that passed its check names what it was asked for, so it is no stub
    # even where the guard cut it short at a colon (``gate._settled_rule``).
    flags = [
        None if flag == "stub" and passed else flag
        for flag, passed in zip(degenerate_flags(answers.texts), answers.passed, strict=True)
    ]
    bad = [f"{flag}: {_short(answers.texts[i])!r}" for i, flag in enumerate(flags) if flag]
    return (len(bad) / len(flags) if flags else 0.0), bad


def decide(parent: Answers, candidate: Answers, guard: GuardSettings) -> Verdict:
    """Judge ``candidate`` against ``parent`` (the same probes, in the same order).

    Rules: the candidate fails when it loses more than ``max_probe_drop`` of the
    capability probes its parent passed (in ``strict`` mode: any), loses any of
    the adapter's own probes its parent passed, gives more than
    ``max_degenerate`` degenerate answers (and more than its parent did), or,
    in ``strict`` mode, when the mean logprob of the parent's answers dropped
    by more than ``max_drift`` nats per token.
    """
    if parent.prompts != candidate.prompts:
        raise ValueError("parent and candidate answered different probes")
    reasons: list[str] = []
    lost, held = _lost(parent, candidate, user=False)
    allowed = 0.0 if guard.mode == "strict" else guard.max_probe_drop
    if held and len(lost) / held > allowed + 1e-9:
        shown = "; ".join(f"{parent.prompts[i]!r} -> {_short(candidate.texts[i])!r}" for i in lost)
        reasons.append(f"lost {len(lost)} of {held} capability probes the parent passed: {shown}")
    lost_user, held_user = _lost(parent, candidate, user=True)
    for i in lost_user:
        reasons.append(
            f"no longer answers the adapter's own probe {parent.prompts[i]!r}: "
            f"{_short(candidate.texts[i])!r}"
        )
    before, _ = _degenerate(parent)
    after, bad = _degenerate(candidate)
    if after > guard.max_degenerate + 1e-9 and after > before + 1e-9:
        count = f"{len(bad)} of {len(candidate.texts)}"
        reasons.append(f"{count} answers degenerate ({'; '.join(bad)})")
    measures = {
        "guard_probe_score": _score(candidate, user=False),
        "guard_parent_probe_score": _score(parent, user=False),
        "guard_degenerate": after,
        "guard_parent_degenerate": before,
    }
    if held_user:
        measures["guard_user_probes_lost"] = float(len(lost_user))
    drift = _drift(parent, candidate)
    if drift is not None:
        measures["guard_drift"] = drift
        if guard.mode == "strict" and drift > guard.max_drift:
            reasons.append(
                f"the parent's answers lost {drift:.2f} nats per token (limit {guard.max_drift:g})"
            )
    return Verdict(
        passed=not reasons,
        mode=guard.mode,
        reasons=tuple(reasons),
        measures=measures,
        answers=dict(zip(candidate.prompts, candidate.texts, strict=True)),
    )


def _score(answers: Answers, *, user: bool) -> float:
    pairs = zip(answers.passed, answers.kinds, strict=True)
    flags = [ok for ok, kind in pairs if (kind == "user") == user]
    return sum(flags) / len(flags) if flags else 1.0


def _drift(parent: Answers, candidate: Answers) -> float | None:
    if parent.anchor_logprob is None or candidate.anchor_logprob is None:
        return None
    drift = parent.anchor_logprob - candidate.anchor_logprob
    return drift if math.isfinite(drift) else math.inf
