"""The manifest of one stored version: ``manifest.json``, with a format version.

Unknown keys load with a warning (a newer claas may add some); a newer format
version is refused with a message to upgrade.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import attrs

from claas.errors import StorageError
from claas.types import AdapterVersion

__all__ = ["FORMAT_VERSION", "MANIFEST", "parse_manifest"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# A version's location is where it is found, so a stored "path" is ignored.
# The guard's verdict is a file of its own (``verdict.json``), not part of the manifest.
_VERSION_KEYS = frozenset(f.name for f in attrs.fields(AdapterVersion)) - {"path", "verdict"}
_KNOWN_KEYS = _VERSION_KEYS | {"format_version", "path"}


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_manifest(text: str, version_dir: Path) -> AdapterVersion:
    where = version_dir / MANIFEST
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StorageError(f"{where} is not valid JSON: {exc}") from exc
    fmt = data.get("format_version") if isinstance(data, dict) else None
    if not _is_count(fmt) or not isinstance(fmt, int):
        raise StorageError(f"{where} has no valid format_version (got {fmt!r})")
    if fmt > FORMAT_VERSION:
        raise StorageError(
            f"{where} has format_version {fmt}; this claas reads up to {FORMAT_VERSION}, "
            "upgrade claas to read it"
        )
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        warnings.warn(f"{where}: ignoring unknown manifest key(s) {unknown}", stacklevel=4)
    fields = {key: data[key] for key in _VERSION_KEYS if key in data}
    fields["feedback_ids"] = tuple(fields.get("feedback_ids") or ())
    try:
        return AdapterVersion(**fields, path=str(version_dir))
    except TypeError as exc:
        raise StorageError(f"{where} lacks or mistypes a field: {exc}") from exc
