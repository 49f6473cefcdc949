"""Tools offered to a chat: validation, and which chat templates can render them."""

from __future__ import annotations

from typing import Any

import pytest

from claas import InvalidRequest, Learner, ToolsUnsupported
from claas.testing import FakeTokenizer
from claas.tools import Tools, check_renderable, pop_tools, template_renders_tools

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


def test_tools_take_function_definitions_and_a_choice() -> None:
    tools = Tools([WEATHER])
    assert tools.definitions == (WEATHER,) and tools.choice == "auto" and tools.offered
    assert not Tools([WEATHER], choice="none").offered
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert Tools([WEATHER], choice=named).choice == named


@pytest.mark.parametrize(
    ("definitions", "choice", "message"),
    [
        ([{"type": "function"}], "auto", r"tools\[0\] must be"),
        ([{"type": "retrieval", "function": {"name": "f"}}], "auto", r"tools\[0\] must be"),
        ([{"type": "function", "function": {"name": ""}}], "auto", "name must be"),
        ([WEATHER], "sometimes", "is not one of"),
        ([WEATHER], {"type": "function", "function": {"name": "other"}}, "a function in tools"),
    ],
)
def test_malformed_tools_are_invalid_requests(
    definitions: list[dict[str, Any]], choice: Any, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Tools(definitions, choice=choice)


class _Template:
    def __init__(self, template: Any) -> None:
        self.chat_template = template


def test_only_templates_that_read_tools_render_them() -> None:
    smollm2 = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    assert not template_renders_tools(_Template(smollm2))
    assert not template_renders_tools(_Template(None))
    assert template_renders_tools(_Template("{% if tools %}{{ tools | tojson }}{% endif %}"))
    assert template_renders_tools(_Template({"default": smollm2, "tool_use": "{{ tools }}"}))
    with pytest.raises(ToolsUnsupported, match="does not render tools"):
        check_renderable(Tools([WEATHER]), _Template(smollm2), "local", "smollm2")
    check_renderable(Tools([WEATHER], choice="none"), _Template(smollm2), "local", "smollm2")
    with pytest.raises(ToolsUnsupported, match="cannot force a tool call"):
        check_renderable(Tools([WEATHER], choice="required"), FakeTokenizer(), "local", "m")


def test_the_learner_renders_tools_into_the_recorded_prompt(fake_learner: Learner) -> None:
    fake_learner.init_adapter("alice/bot")
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    completion = fake_learner.chat("alice/bot", messages, tools=Tools([WEATHER]), max_tokens=4)
    prompt = bytes(i for i in completion.prompt_ids if i < 256).decode()
    assert '"name": "get_weather"' in prompt
    plain = fake_learner.chat("alice/bot", messages, max_tokens=4)
    assert len(plain.prompt_ids) < len(completion.prompt_ids)
    with pytest.raises(InvalidRequest, match=r"claas\.tools\.Tools"):
        fake_learner.chat("alice/bot", messages, tools=[WEATHER])


def test_pop_tools_leaves_the_sampling_options() -> None:
    options: dict[str, object] = {"tools": Tools([WEATHER]), "max_tokens": 3}
    assert isinstance(pop_tools(options), Tools) and options == {"max_tokens": 3}
    assert pop_tools({"max_tokens": 3}) is None
