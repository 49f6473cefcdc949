"""Scratch directories of updates in progress, under ``<data_dir>/tmp``.

An engine writes an update into a fresh work directory; the store then moves
its files into the new version. A crashed process leaves its work directory
behind, so old ones are swept when a learner starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["move_contents", "sweep_scratch", "update_workdir"]

_PREFIX = "update-"


@contextlib.contextmanager
def update_workdir(scratch: Path) -> Iterator[Path]:
    """A fresh work directory under ``scratch``, removed on exit whatever happens."""
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=scratch))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sweep_scratch(scratch: Path, max_age: float = 6 * 3600) -> None:
    """Remove work dirs left by crashed processes (old enough to be nobody's)."""
    if not scratch.is_dir():
        return
    cutoff = time.time() - max_age
    for child in scratch.glob(_PREFIX + "*"):
        if child.stat().st_mtime < cutoff:
            shutil.rmtree(child, ignore_errors=True)


def move_contents(source: Path, dest: Path) -> None:
    """Move every entry of ``source`` into ``dest`` (same filesystem: renames)."""
    for child in source.iterdir():
        os.replace(child, dest / child.name)
