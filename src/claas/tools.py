"""Tools a chat offers the model (OpenAI's ``tools`` and ``tool_choice``).

A :class:`Tools` travels with one chat request to the serving backend. vLLM
renders the definitions with the model's chat template and parses the calls
the model makes; the local and Tinker backends render them with the base
model's chat template, which must know about tools (see
:func:`template_renders_tools`), and return the model's raw text: they have no
tool-call parser and no constrained decoding, so they take ``tool_choice``
``auto`` or ``none`` only. Whatever the backend, the recorded completion holds
the exact prompt ids (tool definitions rendered in) and response ids (tool
calls included), so feedback trains on what was served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from claas.errors import InvalidRequest, ToolsUnsupported

__all__ = ["ToolCall", "Tools", "check_renderable", "pop_tools", "template_renders_tools"]

_CHOICES = ("auto", "none", "required")


def _definitions(value: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    result = []
    for index, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or tool.get("type", "function") != "function":
            raise InvalidRequest(f"tools[{index}] must be {{'type': 'function', 'function': ...}}")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest(f"tools[{index}].function.name must be a non-empty string")
        result.append(dict(tool))
    return tuple(result)


def _check_choice(tools: Tools, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, str):
        if value not in _CHOICES:
            raise InvalidRequest(f"tool_choice {value!r} is not one of {', '.join(_CHOICES)}")
        return
    name = value.get("function", {}).get("name") if isinstance(value, Mapping) else None
    if name not in {t["function"]["name"] for t in tools.definitions}:
        raise InvalidRequest("tool_choice must be auto, none, required or a function in tools")


@attrs.frozen
class Tools:
    """The tools offered for one chat.

    Attributes:
        definitions: OpenAI function tools, ``{"type": "function", "function":
            {"name", "description", "parameters"}}``.
        choice: ``auto`` (the default), ``none``, ``required`` or
            ``{"type": "function", "function": {"name": ...}}``.
    """

    definitions: tuple[dict[str, Any], ...] = attrs.field(converter=_definitions)
    choice: str | dict[str, Any] = attrs.field(default="auto", validator=_check_choice)

    @property
    def offered(self) -> bool:
        """Whether the model may call a tool at all (``none`` renders no tools)."""
        return bool(self.definitions) and self.choice != "none"

    def free_choice_only(self, backend: str) -> None:
        """Refuse a forced tool choice on a backend that cannot constrain decoding.

        Raises:
            ToolsUnsupported: If ``choice`` is ``required`` or names a function.
        """
        if self.choice not in ("auto", "none"):
            raise ToolsUnsupported(
                f"the {backend} backend cannot force a tool call; use tool_choice 'auto' "
                "(vLLM serves 'required' and named functions)"
            )


@attrs.frozen
class ToolCall:
    """A tool call the model made, as parsed by the serving backend.

    Attributes:
        id: The call id (``call_...``) the tool result refers to.
        name: The function called.
        arguments: Its arguments, the JSON text the model wrote.
    """

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template reads the ``tools`` variable.

    A template that never mentions ``tools`` would drop the definitions silently,
    so the model would answer without ever seeing them.
    """
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, Mapping):  # named templates: one of them may be "tool_use"
        return any("tools" in str(t) for t in template.values())
    return isinstance(template, str) and "tools" in template


def check_renderable(tools: Tools | None, tokenizer: Any, backend: str, model: str) -> None:
    """Refuse tools the local-template backends cannot serve.

    Raises:
        ToolsUnsupported: A forced tool choice, or a template that ignores tools.
    """
    if tools is None or not tools.offered:
        return
    tools.free_choice_only(backend)
    if not template_renders_tools(tokenizer):
        raise ToolsUnsupported(
            f"the chat template of {model} does not render tools; serve a model whose "
            "template does (or vLLM with a tool-call parser), or send the request without tools"
        )


def pop_tools(options: dict[str, object]) -> Tools | None:
    """Take ``tools`` out of a chat's keyword options (the rest are sampling options).

    Raises:
        InvalidRequest: If ``tools`` is given and is not a :class:`Tools`.
    """
    tools = options.pop("tools", None)
    if tools is not None and not isinstance(tools, Tools):
        raise InvalidRequest(f"tools must be a claas.tools.Tools, not {type(tools).__name__}")
    return tools
