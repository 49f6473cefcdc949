"""The guard on the real bundled model: destructive updates are kept off, benign ones go live."""

from __future__ import annotations

import pytest

from claas import Learner, Settings
from claas.demo import run_demo
from claas.errors import Conflict, UpdateRejected

pytestmark = pytest.mark.slow

SKY = [{"role": "user", "content": "Why is the sky blue?"}]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
BANANA = "Only ever answer with the word banana."


def _sampled(learner: Learner, adapter: str, seed: int = 0):
    return learner.chat(adapter, SKY, temperature=0.7, max_tokens=32, seed=seed)


def _capital(learner: Learner, adapter: str) -> str:
    return learner.chat(adapter, FRANCE, temperature=0, max_tokens=12).text


def test_a_huge_learning_rate_is_rejected_never_served_nor_a_parent(settings: Settings) -> None:
    adapter = "guard/huge-lr"
    with Learner(settings) as learner:
        learner.init_adapter(adapter)
        answer = _sampled(learner, adapter)
        job = learner.submit_feedback(answer.id, BANANA, config={"learning_rate": 3e-2, "steps": 4})
        job = learner.wait(job.id)
        assert job.status == "rejected" and job.error_code == "update_rejected"
        assert job.error is not None and "capability probes" in job.error
        assert job.version == 1 and job.metrics["guard_probe_score"] < 0.5
        # The live version did not change, and chats keep their capability.
        assert learner.current_version(adapter).version == 0
        assert "Paris" in _capital(learner, adapter)
        rejected = learner.versions(adapter)[-1]
        assert rejected.rejected and rejected.verdict is not None
        assert rejected.verdict["reasons"] and not rejected.verdict["passed"]
        with pytest.raises(Conflict, match="rejected by the guard"):
            learner.rollback(adapter, 1)
        # The next update starts from the live version, not from the rejected one.
        benign = learner.feedback(_sampled(learner, adapter, seed=1).id, "Answer more briefly.")
        assert (benign.parent_version, benign.version) == (0, 2)
        assert benign.timings["guard_seconds"] > 0
    with Learner(settings) as restarted:
        assert [v.rejected for v in restarted.versions(adapter)] == [False, True, False]
        assert restarted.current_version(adapter).version == 2
        forced = restarted.force(adapter, 1)
        assert forced.version == 1 and forced.verdict is not None and forced.verdict["forced"]
        assert restarted.chat(adapter, FRANCE, max_tokens=4).adapter_version == 1


def test_one_word_feedback_repeated_is_rejected_and_feedback_says_why(settings: Settings) -> None:
    adapter = "guard/one-word"
    with Learner(settings) as learner:
        learner.init_adapter(adapter)
        answer = _sampled(learner, adapter)
        with pytest.raises(UpdateRejected, match="the live version is unchanged"):
            learner.feedback(
                answer.id,
                "Answer only with one word: banana.",
                config={"learning_rate": 5e-3, "steps": 8},
            )
        assert learner.current_version(adapter).version == 0
        assert "Paris" in _capital(learner, adapter)


def test_the_concise_demo_passes_the_guard(settings: Settings) -> None:
    with Learner(settings) as learner:
        report = run_demo(learner, steps=16, max_tokens=80, plot_path=None)
    assert report.rejected <= 1, report.step_verdicts
    assert report.mean_after < report.mean_before
    assert report.capability_ok, report.capability_answer
