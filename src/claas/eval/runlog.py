"""The on-disk form of an eval run, and finding runs for a dashboard.

A run directory holds::

    run.json       what the run is (name, fingerprint, config), written at start
    steps.jsonl    one record per measured step per preference, appended as it goes
    summary.json   written when the run finishes
    *.png          the plots

``steps.jsonl`` is the source of truth for resuming: a step is done once its
line is written. A line cut short by a kill is dropped when the log is opened.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from claas.errors import Conflict, StorageError

__all__ = [
    "FORMAT_VERSION",
    "PLOT_FILES",
    "RUN_FILE",
    "STEPS_FILE",
    "SUMMARY_FILE",
    "StepLog",
    "check_run_file",
    "latest_runs",
    "read_steps",
    "read_summary",
    "remove_run_files",
]

FORMAT_VERSION = 1
RUN_FILE = "run.json"
STEPS_FILE = "steps.jsonl"
SUMMARY_FILE = "summary.json"
PLOT_FILES = ("compliance.png", "margins.png", "collapse.png")


class StepLog:
    """Append-only JSONL of step records, loaded on open.

    Args:
        path: The ``steps.jsonl`` file (created on the first append).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = _load(path)

    def steps(self, preference: str) -> list[dict[str, Any]]:
        """The records of one preference, in step order."""
        mine = [r for r in self.records if r.get("preference") == preference]
        return sorted(mine, key=lambda r: int(r["step"]))

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record durably (flushed and fsynced) and keep it in memory."""
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records.append(dict(record))


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    records: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if index != len(lines) - 1:
                raise StorageError(f"{path} line {index + 1} is not valid JSON: {exc}") from exc
            # The last line of a killed run may be cut short: drop it, keep the rest.
            warnings.warn(f"{path}: dropping an incomplete last line", stacklevel=3)
            kept = "".join(f"{line}\n" for line in lines[:index])
            path.write_text(kept, encoding="utf-8")
    return records


def check_run_file(output_dir: Path, name: str, fingerprint: Mapping[str, Any]) -> bool:
    """Compare the run file with this run; return whether an earlier run exists.

    Raises:
        Conflict: If the directory holds a different run (other preferences,
            seed, hyperparameters...): resuming it would mix two experiments.
    """
    path = output_dir / RUN_FILE
    if not path.exists():
        return False
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    before = earlier.get("fingerprint", {})
    now = json.loads(json.dumps(fingerprint))
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        raise Conflict(
            f"{output_dir} holds run {earlier.get('name')!r} with different {changed}; "
            "pass fresh=true to start over or choose another run_name/output_dir"
        )
    return True


def remove_run_files(output_dir: Path) -> None:
    """Delete the files a run writes (and nothing else) from ``output_dir``."""
    for name in (RUN_FILE, STEPS_FILE, SUMMARY_FILE, *PLOT_FILES):
        (output_dir / name).unlink(missing_ok=True)


def read_steps(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The step records of a run directory (empty if it has none yet)."""
    return _load(Path(run_dir) / STEPS_FILE)


def read_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``summary.json``, or ``None`` while the run has not finished."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else None


def _run_dirs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.is_dir() and ((child / STEPS_FILE).exists() or (child / RUN_FILE).exists()):
            yield child


def _touched(run_dir: Path) -> float:
    times = [
        (run_dir / name).stat().st_mtime
        for name in (STEPS_FILE, SUMMARY_FILE, RUN_FILE)
        if (run_dir / name).exists()
    ]
    return max(times, default=0.0)


def latest_runs(data_dir: str | os.PathLike[str], *, limit: int | None = None) -> list[Path]:
    """Eval run directories under ``<data_dir>/eval``, most recently updated first.

    Each holds ``steps.jsonl`` (live while the run goes), and once it has
    finished ``summary.json`` and the PNG plots (:data:`PLOT_FILES`).

    Args:
        data_dir: The CLaaS data directory.
        limit: Return at most this many.
    """
    runs = sorted(_run_dirs(Path(data_dir).expanduser() / "eval"), key=_touched, reverse=True)
    return runs[:limit] if limit is not None else runs
