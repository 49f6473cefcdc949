"""Thinking (reasoning) blocks: the one place that knows how they look.

Reasoning models emit their thinking before the answer: Qwen3 inside
``<think>...</think>``, the harmony format on an ``analysis`` channel before
the ``final`` one. The user sees the answer only; the recorded completion keeps
every raw token, and student and teacher prompts are rendered with the same
thinking flag.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["chat_template_kwargs", "split_thinking", "visible_text"]

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>\s*", re.DOTALL)
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_END = re.compile(r"<\|(?:end|return|call)\|>")


def chat_template_kwargs(thinking: bool) -> dict[str, Any]:
    """Keyword arguments for ``apply_chat_template`` for the given thinking flag.

    Templates without a thinking switch ignore the extra variable.
    """
    return {"enable_thinking": thinking}


def split_thinking(raw: str) -> tuple[str, str]:
    """Split a raw response into ``(thinking, answer)``.

    An unterminated ``<think>`` block (the answer was cut off while thinking)
    leaves an empty answer.
    """
    if _HARMONY_FINAL in raw:
        analysis, _, final = raw.partition(_HARMONY_FINAL)
        return analysis, _HARMONY_END.split(final, maxsplit=1)[0]
    match = _THINK_BLOCK.search(raw)
    if match:
        return match.group(1).strip(), (raw[: match.start()] + raw[match.end() :]).strip()
    stripped = raw.lstrip()
    if stripped.startswith("<think>"):
        return stripped[len("<think>") :].strip(), ""
    if "</think>" in raw:
        # Templates that open the block in the prompt leave only the closing tag.
        thinking, _, answer = raw.partition("</think>")
        return thinking.strip(), answer.strip()
    return "", raw


def visible_text(raw: str) -> str:
    """The part of a raw response shown to the user."""
    return split_thinking(raw)[1]
