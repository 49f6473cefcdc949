"""The guard's files in the adapter store: verdicts and an adapter's own probes.

A version's ``verdict.json`` lies beside its ``manifest.json`` (the version's
files stay immutable; the verdict is written once when the guard has judged it,
and again only when a rejected version is forced live). An adapter's
``guard_probes.json`` lies beside its ``LATEST``. Both are replaced through a
temporary file, so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from claas.errors import InvalidRequest, StorageError
from claas.storage._files import fsync, write_json

__all__ = ["PROBES", "VERDICT", "read_probes", "read_verdict", "write_probes", "write_verdict"]

VERDICT = "verdict.json"
PROBES = "guard_probes.json"
_MAX_PROBES = 32
_MAX_CHARS = 2000


def _replace_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}~{uuid.uuid4().hex}")
    try:
        write_json(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync(path.parent)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"{path} is unreadable: {exc}") from None


def read_verdict(version_dir: Path) -> dict[str, Any] | None:
    """The guard's verdict on the version in ``version_dir`` (``None``: not judged)."""
    data = _read_json(version_dir / VERDICT)
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("passed"), bool):
        raise StorageError(f"{version_dir / VERDICT} is malformed: {data!r}")
    return data


def write_verdict(version_dir: Path, verdict: Mapping[str, Any]) -> None:
    """Write a version's verdict (a mapping with a bool ``passed``)."""
    if not isinstance(verdict.get("passed"), bool):
        raise InvalidRequest(f"a verdict needs a bool 'passed', got {dict(verdict)!r}")
    _replace_json(version_dir / VERDICT, dict(verdict))


def check_probes(probes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate user probes: each ``{"prompt": str, "expect": [str, ...]}``.

    Raises:
        InvalidRequest: Naming the probe and the rule it breaks.
    """
    if isinstance(probes, (str, bytes)) or len(probes) > _MAX_PROBES:
        raise InvalidRequest(f"probes must be a list of at most {_MAX_PROBES} probes")
    checked = []
    for i, probe in enumerate(probes):
        prompt, expect = probe.get("prompt"), probe.get("expect")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > _MAX_CHARS:
            raise InvalidRequest(f"probe {i}: prompt must be a non-empty string of <= 2000 chars")
        if (
            isinstance(expect, str)
            or not isinstance(expect, (list, tuple))
            or not expect
            or not all(isinstance(e, str) and e.strip() for e in expect)
        ):
            raise InvalidRequest(
                f"probe {i}: expect must be a non-empty list of answers, one of which the "
                "answer must contain"
            )
        unknown = sorted(set(probe) - {"prompt", "expect"})
        if unknown:
            raise InvalidRequest(f"probe {i}: unknown key(s) {unknown}")
        checked.append({"prompt": prompt, "expect": [e.strip() for e in expect]})
    return checked


def read_probes(adapter_dir: Path) -> list[dict[str, Any]]:
    """An adapter's own probes (empty when it has none)."""
    data = _read_json(adapter_dir / PROBES)
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("probes"), list):
        raise StorageError(f"{adapter_dir / PROBES} is malformed")
    return check_probes(data["probes"])


def write_probes(adapter_dir: Path, probes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Replace an adapter's own probes; return them as stored."""
    checked = check_probes(probes)
    _replace_json(adapter_dir / PROBES, {"probes": checked})
    return checked
