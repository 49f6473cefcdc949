"""The remote target against the real server app (on the fake learner).

The same run driven over HTTP must record the same numbers as in process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("claas_server")
from eval_support import serving

from claas import Learner
from claas.errors import (
    AdapterNotFound,
    BackendUnavailable,
    InvalidConfig,
    PermissionDenied,
)
from claas.eval import EvalConfig, LearnerTarget, read_steps, run
from claas.eval.remote import RemoteTarget

MakeConfig = Callable[..., EvalConfig]
ADAPTER = "eval/remote-test"


@pytest.fixture
def url(shrinking_learner: Learner) -> Iterator[str]:
    with serving(shrinking_learner) as served:
        yield served


@pytest.fixture
def remote(url: str) -> Iterator[RemoteTarget]:
    target = RemoteTarget(url)
    yield target
    target.close()


def numbers(records: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
    return [(r["step"], r["version"], r["metrics"]) for r in records]


def test_a_remote_run_matches_the_in_process_run(
    remote: RemoteTarget, make_config: MakeConfig, tmp_path: Path
) -> None:
    over_http = run(make_config("run_name=http"), target=remote)
    records = read_steps(over_http.output_dir)
    assert [r["version"] for r in records] == [0, 1, 2, 3]
    assert records[-1]["metrics"]["compliance"] == 1.0

    from eval_support import shrinking_responder

    from claas import Settings
    from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

    local = Learner(
        Settings(data_dir=tmp_path / "local"),
        inference=FakeInference(responder=shrinking_responder),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    in_process = run(make_config("run_name=local"), target=LearnerTarget(local))
    local.close()
    assert numbers(records) == numbers(read_steps(in_process.output_dir))


def test_adapter_lifecycle_over_http(remote: RemoteTarget) -> None:
    assert remote.reset_adapter(ADAPTER, seed=0) == 0
    answer = remote.chat(ADAPTER, "Why?", max_tokens=200, temperature=0.0, seed=1, top_logprobs=3)
    assert answer.completion_id.startswith("chatcmpl-") and answer.version == 0
    assert answer.n_tokens == len(answer.text.encode()) + 1  # bytes + end of turn
    # The exact recorded tokens, as in process: the end of turn has its logprob too.
    assert len(answer.logprobs) == len(answer.top_logprobs) == answer.n_tokens
    version, metrics = remote.feedback(ADAPTER, [answer.completion_id], "Shorter.", {"alpha": 0.5})
    assert version == 1 and metrics["loss"] == pytest.approx(0.1)
    assert remote.current_version(ADAPTER) == 1
    assert remote.score(ADAPTER, "Why?", "abc") == pytest.approx([-0.5] * 3)
    remote.rollback(ADAPTER, 0)
    assert remote.current_version(ADAPTER) == 0
    # A reset drops every version.
    assert remote.reset_adapter(ADAPTER, seed=0) == 0
    assert remote.current_version(ADAPTER) == 0


def test_server_errors_become_claas_errors(remote: RemoteTarget) -> None:
    with pytest.raises(AdapterNotFound):
        remote.current_version("eval/missing")
    with pytest.raises(AdapterNotFound):
        remote.chat("eval/missing", "Hi", max_tokens=5, temperature=0.0, seed=None)
    remote.reset_adapter(ADAPTER, seed=0)
    answer = remote.chat(ADAPTER, "Hi", max_tokens=5, temperature=0.0, seed=None)
    with pytest.raises(InvalidConfig, match="alpha"):
        remote.feedback(ADAPTER, [answer.completion_id], "Shorter.", {"alpha": 3.0})


def test_api_keys_are_sent(tmp_path: Path) -> None:
    from claas import Settings
    from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

    learner = Learner(
        Settings(data_dir=tmp_path / "keyed").evolve(api_keys={"secret-key-1": ("eval",)}),
        inference=FakeInference(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    with serving(learner) as url:
        anonymous = RemoteTarget(url)
        with pytest.raises(PermissionDenied):
            anonymous.reset_adapter(ADAPTER, seed=0)
        keyed = RemoteTarget(url, api_key="secret-key-1")
        assert keyed.reset_adapter(ADAPTER, seed=0) == 0
        anonymous.close()
        keyed.close()
    learner.close()


def test_an_unreachable_server_is_backend_unavailable() -> None:
    target = RemoteTarget("http://127.0.0.1:9", timeout=2.0)
    with pytest.raises(BackendUnavailable):
        target.current_version(ADAPTER)
    target.close()
