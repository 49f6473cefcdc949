"""The skip pre-check: is there anything for an update to learn?

Before training, the engine measures the mean per-token divergence between
the teacher (shown the hindsight text) and the student on the response, with
forward passes only; or, with ``DistillConfig.skip_reference``, between that
teacher and the teacher shown a neutral reference text, so that what any
hindsight block does to a small model's predictions is not counted as
something to learn. When the text asks for nothing different (a neutral
follow-up such as "Thanks. Next question."), the two agree and the update
would be near zero: below ``DistillConfig.skip_below`` the job ends
``skipped`` and no version is published.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from claas.teacher import DistillSample
from claas.training.base import DivergenceProbe, TrainingEngine
from claas.types import AdapterVersion, DistillConfig, TeacherTopKLists

__all__ = ["Skipped", "precheck"]


@attrs.frozen(kw_only=True)
class Skipped:
    """An update the pre-check found nothing to learn in."""

    adapter_id: str
    parent_version: int
    divergence: float
    threshold: float

    @property
    def reason(self) -> str:
        """Why the job was skipped, for its ``error`` field."""
        return (
            f"skipped: the teacher-student divergence {self.divergence:.4g} is below "
            f"skip_below={self.threshold:g}; version {self.parent_version} stays live"
        )


def precheck(
    engine: TrainingEngine,
    samples: Sequence[DistillSample],
    parent: AdapterVersion,
    config: DistillConfig,
    remote: Sequence[TeacherTopKLists] | None,
    reference: Callable[[], Sequence[DistillSample]],
) -> float | None:
    """The divergence to compare with ``config.skip_below`` (``None``: no pre-check).

    No pre-check runs when ``skip_below`` is 0 or the engine cannot measure
    without training (it is not a :class:`~claas.training.base.DivergenceProbe`).
    With ``config.skip_reference`` set, ``reference()`` builds the samples of
    the same responses with that neutral text as the feedback.
    """
    if config.skip_below <= 0 or not isinstance(engine, DivergenceProbe):
        return None
    return engine.divergence(
        samples,
        parent=parent,
        config=config,
        remote_teacher=remote,
        reference=reference() if config.skip_reference else None,
    )
