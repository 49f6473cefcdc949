"""Durable file operations of the adapter store: fsync, JSON written whole, locks.

The store's crash safety rests on every visible change being one atomic rename
of something fsynced first; these are the small pieces that make that true.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["flock", "fsync", "listdir", "write_json"]


def flock(path: Path, *, blocking: bool) -> int | None:
    """Lock ``path`` exclusively; return the open descriptor, or None if busy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            held, current = os.fstat(fd), os.stat(path)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                return None
            if isinstance(exc, FileNotFoundError):  # a delete unlinked it while we waited
                continue
            raise
        if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
            return fd
        os.close(fd)


def listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
