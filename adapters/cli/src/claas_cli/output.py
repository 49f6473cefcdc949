"""Printing for humans (rich) or scripts (JSON), and the one error-to-exit-code map.

Exit codes: 0 success, 1 a :class:`~claas.errors.ClaasError` (its message on
stderr, no traceback), 2 a usage error (Typer's own).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import typer
from rich.console import Console
from typer.core import TyperGroup

from claas import ClaasError, PermissionDenied

__all__ = [
    "CLAAS_ERROR_EXIT",
    "ClaasGroup",
    "Output",
    "jsonable",
    "report_error",
]

CLAAS_ERROR_EXIT = 1


def jsonable(value: Any) -> Any:
    """Turn attrs records, mappings, tuples and paths into JSON-ready values."""
    if attrs.has(type(value)):
        return jsonable(attrs.asdict(value, recurse=False))
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@attrs.define
class Output:
    """Where a command writes: data to stdout, diagnostics to stderr.

    Attributes:
        json: Print data as one JSON document instead of rich text.
        console: Rich console on stdout.
        err: Rich console on stderr (errors and progress in JSON mode).
    """

    json: bool = False
    console: Console = attrs.field(factory=Console)
    err: Console = attrs.field(factory=lambda: Console(stderr=True))

    @property
    def progress_console(self) -> Console:
        """The console for progress bars: stderr when stdout carries JSON."""
        return self.err if self.json else self.console

    def data(self, value: Any, human: Callable[[Console], None]) -> None:
        """Print ``value`` as JSON, or call ``human`` to render it with rich."""
        if self.json:
            typer.echo(json.dumps(jsonable(value), indent=2, sort_keys=True))
        else:
            human(self.console)


def report_error(error: ClaasError, *, as_json: bool = False) -> None:
    """Print ``error: Kind: message`` (or a JSON object) to stderr."""
    kind = type(error).__name__
    if as_json:
        text = json.dumps({"error": {"type": kind, "message": str(error)}})
    else:
        text = f"error: {kind}: {error}"
    typer.echo(text, err=True)


class ClaasGroup(TyperGroup):
    """The root command group: every ClaasError raised below it exits with code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ClaasError as exc:
            out = getattr(ctx.obj, "out", None)
            report_error(_with_hint(exc), as_json=bool(out and out.json))
            raise typer.Exit(CLAAS_ERROR_EXIT) from None


def _with_hint(error: ClaasError) -> ClaasError:
    """A server's refusal of the (missing) key, with the options that give one."""
    from claas.client import AUTH_FAILED

    if isinstance(error, PermissionDenied) and str(error).startswith(AUTH_FAILED):
        return PermissionDenied(f"{error} (give --api-key or CLAAS_API_KEY)")
    return error
