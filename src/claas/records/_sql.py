"""SQL pieces shared by the records backends and their job queue."""

from __future__ import annotations

from collections.abc import Collection

from claas.errors import InvalidRequest

__all__ = ["DuplicateKey", "adapter_filter", "check_limit"]


class DuplicateKey(Exception):
    """A row broke a unique constraint (each backend raises it for its driver's error)."""


def adapter_filter(
    adapter_id: str | None, namespaces: Collection[str] | None
) -> tuple[str, tuple[str, ...]]:
    """A ``WHERE`` clause on ``adapter_id`` and its namespace (the part before ``/``)."""
    clauses, args = [], []
    if adapter_id is not None:
        clauses.append("adapter_id = ?")
        args.append(adapter_id)
    if namespaces is not None:
        wanted = sorted(set(namespaces))
        # An exact comparison of the prefix: LIKE would read '_' in a namespace as a wildcard.
        clauses.append(
            f"substr(adapter_id, 1, instr(adapter_id, '/') - 1) IN ({', '.join('?' * len(wanted))})"
            if wanted
            else "1 = 0"
        )
        args.extend(wanted)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidRequest(f"limit={limit!r} is invalid: must be an integer >= 1")
