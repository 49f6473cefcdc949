"""The local learning loop end to end on the real bundled model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from safetensors.torch import load_file

from claas import (
    AdapterExists,
    AdapterNotFound,
    CompletionNotFound,
    InvalidAdapterId,
    InvalidConfig,
    InvalidRequest,
    Learner,
    NonFiniteUpdate,
    Settings,
)

QUESTION = [{"role": "user", "content": "Why do leaves change color in the fall?"}]
FEEDBACK = "Way too long. Answer in one short sentence."


def _answer(learner: Learner, adapter: str, tokens: int = 24, seed: int = 0):
    return learner.chat(adapter, QUESTION, temperature=0.7, max_tokens=tokens, seed=seed)


def test_feedback_publishes_a_version_the_next_chat_uses(learner: Learner) -> None:
    v0 = learner.init_adapter("alice/helper", rank=8, alpha=16)
    assert v0.version == 0 and v0.parent is None
    first = _answer(learner, "alice/helper")
    assert first.adapter_version == 0
    before = learner.score("alice/helper", QUESTION, first.text)

    result = learner.feedback(first.id, FEEDBACK, config={"learning_rate": 1e-3})
    assert (result.version, result.parent_version) == (1, 0)
    assert result.metrics["tokens"] == len(first.response_ids)
    assert result.metrics["distill_loss"] > 0
    assert result.timings["total_seconds"] >= result.timings["train_seconds"] > 0

    second = _answer(learner, "alice/helper")
    assert second.adapter_version == 1
    after = learner.score("alice/helper", QUESTION, first.text)
    assert after.logprobs != before.logprobs
    versions = learner.versions("alice/helper")
    assert [v.version for v in versions] == [0, 1]
    assert versions[1].feedback_ids == result.feedback_ids
    assert versions[1].distill_config is not None
    assert versions[1].distill_config["learning_rate"] == 1e-3
    event = learner.feedback_events("alice/helper")[0]
    assert event.status == "applied" and event.version == 1
    lineage = learner.lineage("alice/helper")
    assert [row.version for row in lineage] == [0, 1]


def test_adapter_files_are_peft_format_with_optimizer_state(learner: Learner) -> None:
    learner.init_adapter("alice/files", rank=4, alpha=8)
    answer = _answer(learner, "alice/files", tokens=8)
    learner.feedback(answer.id, FEEDBACK)
    path = Path(learner.current_version("alice/files").path)
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt"} <= {
        p.name for p in path.iterdir()
    }
    weights = load_file(str(path / "adapter_model.safetensors"))
    assert any("lora_B" in key for key in weights)
    assert all("slot" not in key for key in weights)


def test_teacher_is_the_frozen_base_model(settings: Settings) -> None:
    """PEFT injects LoRA in place: a teacher forward with the adapter on would make KL to base 0.

    The first step's large learning rate is meant to move the adapter far from the
    base; the guard would rightly keep such a version from going live, so it is off.
    """
    with Learner(settings.evolve(guard_mode="off")) as learner:
        learner.init_adapter("alice/kl", rank=8, alpha=16)
        answer = _answer(learner, "alice/kl", tokens=12)
        learner.feedback(answer.id, FEEDBACK, config={"learning_rate": 5e-3})
        again = _answer(learner, "alice/kl", tokens=12, seed=1)
        config = {"learning_rate": 1e-4, "kl_beta": 0.1}
        result = learner.feedback(again.id, FEEDBACK, config=config)
    assert result.metrics["kl_to_base"] > 1e-6


def test_rollback_serves_the_old_version_and_feedback_builds_on_it(learner: Learner) -> None:
    learner.init_adapter("bob/roll", rank=4, alpha=8)
    for seed in range(2):
        learner.feedback(_answer(learner, "bob/roll", tokens=8, seed=seed).id, FEEDBACK)
    assert learner.current_version("bob/roll").version == 2
    learner.rollback("bob/roll", 0)
    assert _answer(learner, "bob/roll", tokens=4).adapter_version == 0
    result = learner.feedback(_answer(learner, "bob/roll", tokens=8).id, FEEDBACK)
    assert (result.version, result.parent_version) == (3, 0)


def test_non_finite_update_is_refused_and_publishes_nothing(learner: Learner) -> None:
    learner.init_adapter("bob/nan", rank=4, alpha=8)
    answer = _answer(learner, "bob/nan", tokens=12)
    with pytest.raises(NonFiniteUpdate):
        # Adam moves every weight by ~lr on step one; the second step then overflows.
        learner.feedback(answer.id, FEEDBACK, config={"learning_rate": 1e30, "steps": 3})
    assert [v.version for v in learner.versions("bob/nan")] == [0]
    assert learner.feedback_events("bob/nan")[0].status == "failed"
    # The engine reloads the parent: a sane update afterwards works and is finite.
    result = learner.feedback(answer.id, FEEDBACK)
    assert result.version == 1
    assert all(value == value for value in result.metrics.values())


def test_invalid_requests_raise_typed_errors_and_change_nothing(learner: Learner) -> None:
    learner.init_adapter("carol/safe", rank=4, alpha=8)
    answer = _answer(learner, "carol/safe", tokens=8)
    state = (learner.versions("carol/safe"), learner.feedback_events())
    with pytest.raises(InvalidAdapterId):
        learner.init_adapter("../escape")
    with pytest.raises(AdapterExists):
        learner.init_adapter("carol/safe")
    with pytest.raises(AdapterNotFound):
        learner.chat("carol/missing", QUESTION)
    with pytest.raises(CompletionNotFound):
        learner.feedback("chatcmpl-unknown", FEEDBACK)
    for empty in ("", "   "):
        with pytest.raises(InvalidRequest):
            learner.feedback(answer.id, empty)
    with pytest.raises(InvalidConfig, match="alpha"):
        learner.feedback(answer.id, FEEDBACK, config={"alpha": 3})
    with pytest.raises(InvalidConfig, match="unknown_field"):
        learner.feedback(answer.id, FEEDBACK, config={"unknown_field": 1})
    with pytest.raises(InvalidRequest, match="adapter_id"):
        learner.feedback(text=FEEDBACK, messages=QUESTION, response="Leaves turn.")
    assert (learner.versions("carol/safe"), learner.feedback_events()) == state
    assert not (learner.settings.adapters_dir / "..escape").exists()


def test_raw_feedback_without_a_completion(learner: Learner) -> None:
    learner.init_adapter("carol/raw", rank=4, alpha=8)
    result = learner.feedback(
        text=FEEDBACK,
        messages=QUESTION,
        response="Leaves change color because chlorophyll breaks down as days get shorter.",
        adapter_id="carol/raw",
    )
    assert result.version == 1 and result.metrics["is_ratio_mean"] == 1.0


def test_feedback_after_restart(settings: Settings) -> None:
    with Learner(settings) as first:
        first.init_adapter("dave/restart", rank=4, alpha=8)
        answer = _answer(first, "dave/restart", tokens=8)
    with Learner(settings) as second:
        result = second.feedback(answer.id, FEEDBACK)
        assert result.version == 1
        assert _answer(second, "dave/restart", tokens=4).adapter_version == 1


def test_concurrent_feedback_applies_in_acceptance_order(learner: Learner) -> None:
    learner.init_adapter("erin/busy", rank=4, alpha=8)
    answers = [_answer(learner, "erin/busy", tokens=4, seed=i) for i in range(20)]
    errors: list[BaseException] = []

    def give(completion_id: str) -> None:
        try:
            learner.feedback(completion_id, FEEDBACK)
        except BaseException as exc:  # collected and re-raised by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=give, args=(a.id,)) for a in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors
    versions = learner.versions("erin/busy")
    assert [v.version for v in versions][-20:] == list(range(1, 21))
    events = sorted(learner.feedback_events("erin/busy", limit=100), key=lambda e: e.created)
    assert [e.version for e in events] == list(range(1, 21))
    assert {e.completion_id for e in events} == {a.id for a in answers}
    assert [v.parent for v in versions if v.version > 0][-20:] == list(range(0, 20))


def test_other_adapters_chat_while_one_trains(learner: Learner) -> None:
    learner.init_adapter("fred/slow", rank=4, alpha=8)
    learner.init_adapter("gina/fast", rank=4, alpha=8)
    answer = _answer(learner, "fred/slow", tokens=16)
    done = threading.Event()

    def train() -> None:
        learner.feedback(answer.id, FEEDBACK, config={"steps": 6})
        done.set()

    thread = threading.Thread(target=train)
    thread.start()
    quick = learner.chat("gina/fast", QUESTION, temperature=0, max_tokens=2)
    finished_first = not done.is_set()
    thread.join(timeout=300)
    assert quick.adapter_id == "gina/fast"
    assert finished_first, "a chat on another adapter waited for the whole update"
