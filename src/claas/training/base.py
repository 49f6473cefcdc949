"""The training seam: what every training engine provides.

An engine writes the initial weights of a new adapter, and runs an SDPO update
of a parent version on a batch of samples, writing the result (PEFT files and
optimizer state) into a directory the adapter store then publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from claas.teacher import DistillSample
from claas.types import AdapterVersion, DistillConfig, DistillResult, LoraSpec, TeacherTopKLists

__all__ = ["DivergenceProbe", "TrainingEngine"]


@runtime_checkable
class TrainingEngine(Protocol):
    """Computes adapter updates; implemented by local, Tinker, Modal and fakes."""

    name: str

    def init_adapter(self, lora: LoraSpec, out_dir: Path) -> None:
        """Write the weights of a fresh adapter (equal to the base model) into ``out_dir``."""
        ...

    def distill(
        self,
        samples: Sequence[DistillSample],
        *,
        parent: AdapterVersion,
        config: DistillConfig,
        out_dir: Path,
        remote_teacher: Sequence[TeacherTopKLists] | None = None,
    ) -> DistillResult:
        """Run ``config.steps`` SDPO steps from ``parent`` and write the result to ``out_dir``.

        Raises:
            NonFiniteUpdate: If a loss or gradient is not finite (nothing is written).
            TrainingError: If the update cannot be computed.
        """
        ...

    def on_published(self, version: AdapterVersion) -> None:
        """Told that the last update was published as ``version`` (lets engines cache state)."""
        ...

    def on_deleted(self, versions: Sequence[AdapterVersion]) -> None:
        """Told that the store deleted ``versions`` (their directories may be gone).

        Engines that keep copies outside the store (a training service's
        checkpoints) delete them here; the others do nothing.
        """
        ...

    def close(self) -> None:
        """Release resources."""
        ...


@runtime_checkable
class DivergenceProbe(Protocol):
    """An engine that can measure an update's divergence without training (a capability).

    The skip pre-check (``DistillConfig.skip_below``) uses it; an engine
    without it trains every job.
    """

    def divergence(
        self,
        samples: Sequence[DistillSample],
        *,
        parent: AdapterVersion,
        config: DistillConfig,
        remote_teacher: Sequence[TeacherTopKLists] | None = None,
        reference: Sequence[DistillSample] | None = None,
    ) -> float:
        """The mean per-token divergence of the teacher of ``samples`` under ``parent``.

        From the student: the value the first step's ``distill_loss`` would
        report. With ``reference`` (the same responses, the teacher shown a
        neutral text), from that reference teacher instead. Forward passes
        only: no backward, no optimizer step, nothing written.
        """
        ...
