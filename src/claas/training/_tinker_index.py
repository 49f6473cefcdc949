"""Which service-side checkpoints each published Tinker version owns.

The adapter store deletes a version's directory (retention, ``delete_adapter``)
before the engine hears of it, so the engine keeps its own copy of each
version's ``tinker.json`` under ``<data_dir>/tinker/``, named by adapter,
version and creation time (a re-created adapter's versions never collide).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from claas._tinker import TinkerCheckpoint
from claas.errors import StorageError, TrainingError
from claas.types import AdapterVersion, split_adapter_id

__all__ = ["CheckpointIndex"]


class CheckpointIndex:
    """Durable map from a published version to its :class:`TinkerCheckpoint`.

    Args:
        root: The index directory (created on first write).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _entry(self, version: AdapterVersion) -> Path:
        namespace, name = split_adapter_id(version.adapter_id)
        return self.root / namespace / name / f"{version.version:06d}-{version.created:.6f}"

    def add(self, version: AdapterVersion, checkpoint: TinkerCheckpoint) -> None:
        """Remember the checkpoint of ``version``."""
        checkpoint.write(self._entry(version))

    def get(self, version: AdapterVersion) -> TinkerCheckpoint | None:
        """The remembered checkpoint of ``version``, if any."""
        entry = self._entry(version)
        if not entry.is_dir():
            return None
        try:
            return TinkerCheckpoint.read(entry)
        except (TrainingError, StorageError):
            return None

    def forget(self, version: AdapterVersion) -> None:
        """Drop the entry of ``version``."""
        shutil.rmtree(self._entry(version), ignore_errors=True)
