"""`claas chat`: one-shot answers and the REPL driven through stdin, on the fakes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from claas import Learner

Run = Callable[..., Any]


def _session(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


def test_one_shot_answer_names_version_and_id(cli: Run, cli_json: Run) -> None:
    cli_json("adapters", "init", "team/bot")
    result = cli("chat", "team/bot", "-m", "hi [there]", "--max-tokens", "64")
    assert result.exit_code == 0, result.output
    answer, tag = result.stdout.splitlines()
    assert answer == "[team/bot v0] You said: hi [there]"
    assert tag.startswith("[team/bot@v0] chatcmpl-")


def test_one_shot_respects_max_tokens_and_system(cli_json: Run) -> None:
    cli_json("adapters", "init", "team/bot")
    answer = cli_json(
        "chat", "team/bot", "-m", "hello", "--max-tokens", "5", "--system", "Be brief"
    )
    assert answer["text"] == "[team"
    assert answer["finish_reason"] == "length"


def test_repl_chats_learns_lists_and_rolls_back(cli: Run, observer: Learner) -> None:
    cli("adapters", "init", "team/bot")
    result = cli(
        "chat",
        "team/bot",
        input=_session(
            "/feedback too early",
            "Why is the sky blue?",
            "/feedback Way too long.",
            "And the sea?",
            "/versions",
            "/rollback 0",
            "/rollback zero",
            "/rollback 9",
            "/frobnicate",
            "/help",
            "/reset",
            "/feedback after reset",
            "/feedback",
            "/quit",
            "never read",
        ),
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Chatting with team/bot (live version v0)" in out
    assert "nothing to give feedback on yet" in out
    assert "[team/bot v0] You said: Why is the sky blue?" in out
    assert "updated team/bot: v0 -> v1" in out
    # Read-your-writes: the next answer comes from the new version, and the prompt says so.
    assert "team/bot@v1> " in out
    assert "[team/bot v1] You said: And the sea?" in out
    assert "* v1" in out
    assert "team/bot now serves v0" in out
    assert "usage: /rollback N" in out
    assert "error: VersionNotFound:" in out
    assert "unknown command /frobnicate" in out
    assert "/feedback TEXT" in out
    assert out.count("nothing to give feedback on yet") == 2
    assert "usage: /feedback TEXT" in out
    assert "never read" not in out
    assert observer.current_version("team/bot").version == 0
    assert [v.version for v in observer.versions("team/bot")] == [0, 1]
    assert [e.text for e in observer.feedback_events("team/bot")] == ["Way too long."]


def test_repl_keeps_the_conversation(cli: Run, observer: Learner) -> None:
    cli("adapters", "init", "team/bot")
    result = cli("chat", "team/bot", "--system", "Be brief", input=_session("one", "two"))
    assert result.exit_code == 0, result.output
    completion_id = result.stdout.split("[team/bot@v0] ")[-1].split()[0]
    messages = observer.get_completion(completion_id).messages
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief"),
        ("user", "one"),
        ("assistant", "[team/bot v0] You said: one"),
        ("user", "two"),
    ]


def test_end_of_input_leaves_cleanly(cli: Run) -> None:
    cli("adapters", "init", "team/bot")
    result = cli("chat", "team/bot", input="")
    assert result.exit_code == 0
    assert "team/bot@v0> " in result.stdout


def test_chat_with_a_missing_adapter_exits_1(cli: Run) -> None:
    result = cli("chat", "team/none", input="hello\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: AdapterNotFound:")
    one_shot = cli("chat", "team/none", "-m", "hello")
    assert one_shot.exit_code == 1


def test_bad_sampling_options(cli: Run) -> None:
    cli("adapters", "init", "team/bot")
    assert cli("chat", "team/bot", "-m", "x", "--max-tokens", "0").exit_code == 2
    assert cli("chat", "team/bot", "-m", "x", "--temperature", "-1").exit_code == 2
