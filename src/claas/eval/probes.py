"""Capability probes in eval runs: every probe of :mod:`claas.guard.probes`, asked greedily.

The probes themselves (and their checks) live in the core, where the guard
uses them before a version goes live; this module runs them through an
:class:`~claas.eval.targets.EvalTarget` and summarizes the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from claas.eval.metrics import mean
from claas.eval.targets import EvalTarget
from claas.guard.probes import CAPABILITY_PROBES, COLORS, Probe, at_least, contains, in_order

__all__ = [
    "CAPABILITY_PROBES",
    "COLORS",
    "Probe",
    "ProbeResult",
    "at_least",
    "contains",
    "in_order",
    "run_probes",
]


@attrs.frozen(kw_only=True)
class ProbeResult:
    """How an adapter did on the probes.

    Attributes:
        score: Fraction of all probes passed.
        knowledge: Fraction of knowledge probes passed (``None`` if none ran).
        instruction: Fraction of instruction probes passed (``None`` if none ran).
        answers: The answers, in probe order.
        passed: Whether each answer passed.
    """

    score: float
    knowledge: float | None
    instruction: float | None
    answers: tuple[str, ...]
    passed: tuple[bool, ...]
    prompts: tuple[str, ...]

    @property
    def failed(self) -> list[dict[str, str]]:
        """The prompts that failed, with their answers."""
        return [
            {"prompt": p, "answer": a}
            for p, a, ok in zip(self.prompts, self.answers, self.passed, strict=True)
            if not ok
        ]


def _fraction(flags: list[bool]) -> float | None:
    return mean(float(f) for f in flags) if flags else None


def run_probes(
    target: EvalTarget,
    adapter_id: str,
    probes: Sequence[Probe] = CAPABILITY_PROBES,
    *,
    max_tokens: int = 48,
) -> ProbeResult:
    """Ask every probe greedily and check the answers.

    Args:
        target: What answers.
        adapter_id: The adapter under test.
        probes: The probes (default: :data:`CAPABILITY_PROBES`).
        max_tokens: Answer length cap.

    Raises:
        ValueError: If no probes are given.
    """
    if not probes:
        raise ValueError("no capability probes given")
    answers = [
        target.chat(adapter_id, probe.prompt, max_tokens=max_tokens, temperature=0.0, seed=0).text
        for probe in probes
    ]
    passed = [bool(probe.check(answer)) for probe, answer in zip(probes, answers, strict=True)]
    kinds = [p.kind for p in probes]
    return ProbeResult(
        score=sum(passed) / len(passed),
        knowledge=_fraction([ok for k, ok in zip(kinds, passed, strict=True) if k == "knowledge"]),
        instruction=_fraction(
            [ok for k, ok in zip(kinds, passed, strict=True) if k == "instruction"]
        ),
        answers=tuple(answers),
        passed=tuple(passed),
        prompts=tuple(p.prompt for p in probes),
    )
