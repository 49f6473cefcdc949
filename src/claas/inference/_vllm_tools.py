"""Tool calls in vLLM's chat answers (when it runs with a tool-call parser).

A whole answer carries ``message.tool_calls``; a stream carries fragments in
``delta.tool_calls``, each with its ``index``: the first fragment of a call
brings its ``id`` and function name, later ones more of the ``arguments`` text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from claas.errors import BackendUnavailable
from claas.tools import ToolCall

__all__ = ["ToolCallAssembler", "parse_tool_calls"]


def _call(raw: Any) -> ToolCall:
    function = raw.get("function") if isinstance(raw, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise BackendUnavailable(f"vLLM answered a malformed tool call: {str(raw)[:300]}")
    return ToolCall(
        id=str(raw.get("id") or ""),
        name=function["name"],
        arguments=str(function.get("arguments") or ""),
    )


def parse_tool_calls(message: Any) -> tuple[ToolCall, ...]:
    """The tool calls of a chat answer's ``message`` (none when absent)."""
    calls = message.get("tool_calls") if isinstance(message, Mapping) else None
    return tuple(_call(raw) for raw in calls or ())


class ToolCallAssembler:
    """Joins the ``delta.tool_calls`` fragments of a stream into whole calls."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, delta: Any) -> None:
        """Take the tool-call fragments of one chunk's ``delta``."""
        fragments = delta.get("tool_calls") if isinstance(delta, Mapping) else None
        for fragment in fragments or ():
            call = self._calls.setdefault(
                int(fragment.get("index", 0)), {"id": "", "name": "", "arguments": ""}
            )
            call["id"] = fragment.get("id") or call["id"]
            function = fragment.get("function") or {}
            call["name"] = function.get("name") or call["name"]
            call["arguments"] += function.get("arguments") or ""

    def result(self) -> tuple[ToolCall, ...]:
        """The calls, in index order."""
        return tuple(
            _call({"id": c["id"], "function": {"name": c["name"], "arguments": c["arguments"]}})
            for _, c in sorted(self._calls.items())
        )
