"""`claas feedback` in both forms, its hyperparameter overrides and its errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import typer

from claas import Learner
from claas_cli.feedback import parse_overrides

Run = Callable[..., Any]


@pytest.fixture
def answer_id(cli_json: Run) -> str:
    """An adapter team/bot with one served answer; returns the answer's id."""
    cli_json("adapters", "init", "team/bot")
    answer = cli_json("chat", "team/bot", "-m", "Why is the sky blue?")
    assert answer["adapter_id"] == "team/bot" and answer["adapter_version"] == 0
    return str(answer["id"])


def test_feedback_by_completion_id(cli: Run, answer_id: str, observer: Learner) -> None:
    result = cli("feedback", answer_id, "Way too long.")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("team/bot: v0 -> v1")
    live = observer.current_version("team/bot")
    assert live.version == 1
    event = observer.feedback_events("team/bot")[0]
    assert (event.completion_id, event.text, event.status) == (
        answer_id,
        "Way too long.",
        "applied",
    )


def test_overrides_reach_the_update(cli_json: Run, answer_id: str, observer: Learner) -> None:
    update = cli_json(
        "feedback",
        answer_id,
        "shorter",
        "--config-json",
        '{"learning_rate": 1e-4, "steps": 3}',
        "--set",
        "steps=2",
        "--set",
        "teacher=current",
    )
    assert (update["adapter_id"], update["version"], update["parent_version"]) == ("team/bot", 1, 0)
    config = observer.current_version("team/bot").distill_config
    assert config is not None
    assert (config["learning_rate"], config["steps"], config["teacher"]) == (1e-4, 2, "current")


def test_raw_feedback_needs_no_completion(cli_json: Run, observer: Learner) -> None:
    cli_json("adapters", "init", "team/bot")
    update = cli_json(
        "feedback",
        "--adapter",
        "team/bot",
        "--prompt",
        "What is 2+2?",
        "--response",
        "Let me think about that at length. It is four.",
        "Just the number.",
    )
    assert update["version"] == 1
    event = observer.feedback_events("team/bot")[0]
    assert (event.completion_id, event.text) == (None, "Just the number.")


@pytest.mark.parametrize(
    "args",
    [
        ["only-text"],
        ["id", "text", "extra"],
        ["--adapter", "team/bot", "--prompt", "p", "text"],
        ["--adapter", "team/bot", "--prompt", "p", "--response", "r", "id", "text"],
        ["--prompt", "p", "--response", "r", "text"],
        ["id", "text", "--config-json", "{not json"],
        ["id", "text", "--config-json", "[1, 2]"],
        ["id", "text", "--set", "learning_rate"],
        [],
    ],
)
def test_malformed_invocations_are_usage_errors(
    cli: Run, answer_id: str, args: list[str], observer: Learner
) -> None:
    result = cli("feedback", *args)
    assert result.exit_code == 2, result.output
    assert observer.current_version("team/bot").version == 0


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["chatcmpl-unknown", "shorter"], "CompletionNotFound"),
        (["{id}", "shorter", "--set", "lr=1"], "InvalidConfig"),
        (["{id}", "shorter", "--set", "alpha=2"], "InvalidConfig"),
        (["{id}", "   "], "InvalidRequest"),
        (["--adapter", "team/none", "--prompt", "p", "--response", "r", "x"], "AdapterNotFound"),
    ],
)
def test_rejected_feedback_exits_1_and_publishes_nothing(
    cli: Run, answer_id: str, args: list[str], kind: str, observer: Learner
) -> None:
    result = cli("feedback", *(a.replace("{id}", answer_id) for a in args))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {kind}:")
    assert observer.current_version("team/bot").version == 0


def test_parse_overrides_reads_json_values_and_plain_strings() -> None:
    assert parse_overrides(None, []) is None
    assert parse_overrides(
        '{"alpha": 0.2, "top_k": 50}',
        ["top_k=20", "add_tail=false", "adam_betas=[0.9, 0.99]", "teacher=base"],
    ) == {
        "alpha": 0.2,
        "top_k": 20,
        "add_tail": False,
        "adam_betas": [0.9, 0.99],
        "teacher": "base",
    }
    with pytest.raises(typer.BadParameter):
        parse_overrides(None, ["=3"])
