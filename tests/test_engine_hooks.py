"""The Learner tells its engine which versions the store deleted (``on_deleted``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from claas import InvalidConfig, Learner, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer


def _learner(tmp_path: Path, engine: object, keep_versions: int) -> Learner:
    return Learner(
        Settings(data_dir=tmp_path, keep_versions=keep_versions),
        inference=FakeInference(),
        engine=engine,
        tokenizer=FakeTokenizer(),
    )


def test_retired_and_deleted_versions_reach_the_engine(tmp_path: Path) -> None:
    engine = FakeTrainer()
    with _learner(tmp_path, engine, keep_versions=1) as learner:
        learner.init_adapter("t/a")
        answer = learner.chat("t/a", [{"role": "user", "content": "hi"}])
        learner.feedback(answer.id, "shorter")
        assert engine.deleted == ["t/a@0"]
        learner.feedback(answer.id, "shorter")
        assert engine.deleted == ["t/a@0", "t/a@1"]
        learner.delete_adapter("t/a")
        assert engine.deleted == ["t/a@0", "t/a@1", "t/a@2"]


def test_nothing_retired_means_no_call(tmp_path: Path) -> None:
    engine = FakeTrainer()
    with _learner(tmp_path, engine, keep_versions=5) as learner:
        learner.init_adapter("t/a")
        answer = learner.chat("t/a", [{"role": "user", "content": "hi"}])
        learner.feedback(answer.id, "shorter")
        learner.rollback("t/a", 0)
        learner.feedback(answer.id, "shorter")
    assert engine.deleted == []


def test_an_engine_without_a_protocol_method_is_refused_at_once(tmp_path: Path) -> None:
    class OlderEngine(FakeTrainer):
        on_deleted = None  # an engine written before the hook existed

    with pytest.raises(InvalidConfig, match=r"OlderEngine is not a TrainingEngine.*on_deleted"):
        _learner(tmp_path, OlderEngine(), keep_versions=1)
