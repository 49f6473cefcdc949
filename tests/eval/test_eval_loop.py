"""The eval loop on fakes: records, summary, plots, resuming and repeatability."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from eval_support import shrinking_responder

from claas import Learner, Settings
from claas.errors import Conflict
from claas.eval import EvalConfig, LearnerTarget, latest_runs, read_steps, read_summary, run
from claas.eval.runlog import PLOT_FILES, STEPS_FILE
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

MakeConfig = Callable[..., EvalConfig]
VOLATILE = ("seconds", "timings", "time")


def steady(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record without its timings and completion ids (which differ run to run)."""
    return {k: v for k, v in record.items() if k not in VOLATILE}


def metric(records: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return [r["metrics"].get(key) for r in records]


class Interrupt(BaseException):
    """Stands in for a kill (not an Exception, so nothing on the way catches it)."""


def test_a_run_writes_one_record_per_step(target: LearnerTarget, make_config: MakeConfig) -> None:
    result = run(make_config(), target=target)
    records = read_steps(result.output_dir)
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert [r["version"] for r in records] == [0, 1, 2, 3]
    assert {r["adapter_id"] for r in records} == {"eval/concise-seed0-concise"}
    # Four, three, two, then one sentence: only the last complies with "one short sentence".
    assert metric(records, "compliance") == [0.0, 0.0, 0.0, 1.0]
    tokens = metric(records, "mean_tokens")
    assert tokens == sorted(tokens, reverse=True) and tokens[0] > 3 * tokens[-1]
    # Training answers are sampled before each update, i.e. from the previous version.
    assert metric(records, "train_compliance") == [None, 0.0, 0.0, 0.0]
    assert records[2]["details"]["parent_version"] == 1
    assert records[1]["update"]["loss"] == pytest.approx(0.1)
    assert set(records[1]["timings"]) == {"sample", "update", "measure"}


def test_capability_runs_at_baseline_every_n_and_at_the_end(
    target: LearnerTarget, make_config: MakeConfig
) -> None:
    records = read_steps(
        run(
            make_config("steps=5", "capability.every=2", "metrics=[capability]"), target=target
        ).output_dir
    )
    measured = [r["step"] for r in records if r["metrics"].get("capability") is not None]
    assert measured == [0, 2, 4, 5]
    # The fake echoes the question, so it knows no capitals: the probes notice.
    assert records[0]["details"]["capability_failed"]


def test_margins_follow_the_scores(target: LearnerTarget, make_config: MakeConfig) -> None:
    records = read_steps(run(make_config(), target=target).output_dir)
    margins = metric(records, "margin")
    # The fake scores every token -1/(1+version): the margin shrinks as 1/(1+version).
    assert margins[0] > 0
    for version, margin in enumerate(margins):
        assert margin == pytest.approx(margins[0] / (1 + version))


def test_collapse_signals_and_alerts(target: LearnerTarget, make_config: MakeConfig) -> None:
    records = read_steps(run(make_config("alerts.max_logprob_drift=0.6"), target=target).output_dir)
    assert metric(records, "logprob_drift") == pytest.approx([0.0, 0.5, 2 / 3, 0.75])
    kinds = [{alert.split(":")[0] for alert in r["alerts"]} for r in records]
    assert kinds == [set(), {"answers loop"}, {"logprob drift"}, {"logprob drift"}]
    # Every answer of the fake repeats one sentence about its topic: alike, but not identical.
    assert all(0 < s < 1 for s in metric(records, "self_similarity"))
    # ...and within an answer the sentences repeat: looping falls as answers shorten.
    looping = metric(records, "repetition")
    assert looping[0] > 0.5 and looping[-1] == 0.0
    entropy = metric(records, "entropy")
    assert entropy[0] == pytest.approx(entropy[-1]) and entropy[0] > 0


def test_summary_json(target: LearnerTarget, make_config: MakeConfig) -> None:
    result = run(make_config("metrics=[margin,capability,collapse]"), target=target)
    summary = read_summary(result.output_dir)
    assert summary == json.loads(json.dumps(result.summary))
    concise = summary["preferences"]["concise"]
    assert summary["complete"] and summary["name"] == "concise-seed0"
    assert concise["baseline"]["compliance"] == 0.0 and concise["final"]["compliance"] == 1.0
    assert concise["final_version"] == 3 and concise["steps_completed"] == 3
    assert concise["capability_before"] == concise["capability_after"] == 0.0
    assert concise["capability_after_step"] == 3
    assert [row["step"] for row in concise["table"]] == [0, 1, 2, 3]
    assert summary["wall_seconds"] == pytest.approx(concise["seconds"])
    assert summary["plots"] == []


def test_plots_are_real_pngs(target: LearnerTarget, make_config: MakeConfig) -> None:
    import matplotlib.image

    result = run(make_config("plots=true"), target=target)
    assert [p.name for p in result.plots] == list(PLOT_FILES)
    assert result.summary["plots"] == list(PLOT_FILES)
    for path in result.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.shape[0] >= 300 and image.shape[1] >= 1000
        # Not a blank canvas: lines and text give many distinct colours.
        assert len({tuple(px) for px in image.reshape(-1, image.shape[-1])[::37]}) > 20


def test_runs_repeat_exactly(tmp_path: Path, make_config: MakeConfig) -> None:
    outcomes = []
    for name in ("a", "b"):
        learner = Learner(
            Settings(data_dir=tmp_path / name),
            inference=FakeInference(responder=shrinking_responder),
            engine=FakeTrainer(),
            tokenizer=FakeTokenizer(),
        )
        config = make_config(f"output_dir={tmp_path / name / 'out'}")
        records = read_steps(run(config, target=LearnerTarget(learner)).output_dir)
        learner.close()
        outcomes.append([steady(r) for r in records])
    for a, b in zip(*outcomes, strict=True):
        assert a == b


def test_resume_after_an_interruption(
    shrinking_learner: Learner, target: LearnerTarget, make_config: MakeConfig
) -> None:
    def stop_at_step_two(event: str, data: dict[str, Any]) -> None:
        if event == "step" and data["step"] == 2:
            raise Interrupt

    config = make_config("steps=4")
    with pytest.raises(Interrupt):
        run(config, target=target, progress=stop_at_step_two)
    out = config.resolved_output_dir()
    assert [r["step"] for r in read_steps(out)] == [0, 1, 2]
    assert read_summary(out) is None

    events: list[tuple[str, int | None]] = []
    run(config, target=target, progress=lambda e, d: events.append((e, d.get("step"))))
    assert events == [("step", 3), ("step", 4), ("done", None)]
    records = read_steps(out)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["version"] for r in records] == [0, 1, 2, 3, 4]
    assert [v.version for v in shrinking_learner.versions("eval/concise-seed0-concise")] == [
        0,
        1,
        2,
        3,
        4,
    ]


class DiesAfterUpdate:
    """A target whose feedback lands the update, then 'kills' the run before it is recorded."""

    def __init__(self, inner: LearnerTarget, at_call: int) -> None:
        self.inner, self.at_call, self.calls = inner, at_call, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def feedback(self, *args: Any) -> tuple[int, dict[str, float]]:
        result = self.inner.feedback(*args)
        self.calls += 1
        if self.calls == self.at_call:
            raise Interrupt
        return result


def test_resume_rolls_back_an_update_that_was_never_recorded(
    shrinking_learner: Learner, target: LearnerTarget, make_config: MakeConfig
) -> None:
    config = make_config()
    with pytest.raises(Interrupt):
        run(config, target=DiesAfterUpdate(target, at_call=2), progress=None)  # type: ignore[arg-type]
    adapter = "eval/concise-seed0-concise"
    assert shrinking_learner.current_version(adapter).version == 2
    assert [r["step"] for r in read_steps(config.resolved_output_dir())] == [0, 1]

    run(config, target=target)
    records = read_steps(config.resolved_output_dir())
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    # Step 2 was redone from version 1, the last recorded one, not from the stray v2.
    assert records[2]["details"]["parent_version"] == 1
    assert shrinking_learner.versions(adapter)[3].parent == 1


def test_a_cut_off_last_line_is_dropped_and_redone(
    target: LearnerTarget, make_config: MakeConfig
) -> None:
    config = make_config("steps=2")
    run(config, target=target)
    path = config.resolved_output_dir() / STEPS_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    with pytest.warns(UserWarning, match="incomplete"):
        run(config, target=target)
    assert [r["step"] for r in read_steps(config.resolved_output_dir())] == [0, 1, 2]


def test_more_steps_continue_a_finished_run(target: LearnerTarget, make_config: MakeConfig) -> None:
    run(make_config("steps=2"), target=target)
    result = run(make_config("steps=4"), target=target)
    assert [r["step"] for r in read_steps(result.output_dir)] == [0, 1, 2, 3, 4]
    assert result.summary["preferences"]["concise"]["final"]["compliance"] == 1.0


def test_a_different_run_in_the_same_dir_is_refused(
    target: LearnerTarget, make_config: MakeConfig
) -> None:
    run(make_config("run_name=exp"), target=target)
    with pytest.raises(Conflict, match="seed"):
        run(make_config("run_name=exp", "seed=1"), target=target)
    result = run(make_config("run_name=exp", "seed=1", "fresh=true"), target=target)
    records = read_steps(result.output_dir)
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert result.summary["fingerprint"]["seed"] == 1


def test_a_vanished_adapter_is_a_conflict(
    shrinking_learner: Learner, target: LearnerTarget, make_config: MakeConfig
) -> None:
    config = make_config("steps=1")
    run(config, target=target)
    shrinking_learner.delete_adapter("eval/concise-seed0-concise")
    with pytest.raises(Conflict, match="fresh=true"):
        run(make_config("steps=2"), target=target)


def test_batches_and_optimizer_steps_reach_the_engine(
    shrinking_learner: Learner, target: LearnerTarget, make_config: MakeConfig
) -> None:
    run(make_config("batch_size=3", "steps_per_batch=2", "steps=2"), target=target)
    calls = shrinking_learner.engine.calls
    assert [c["samples"] for c in calls] == [3, 3]
    assert {c["config"].steps for c in calls} == {2}
    prompts = [r["details"]["train_prompts"] for r in read_steps(target_dir(make_config))[1:]]
    assert prompts[0] != prompts[1] and len(prompts[0]) == 3


def target_dir(make_config: MakeConfig) -> Path:
    return make_config().resolved_output_dir()


def test_several_preferences_share_one_log(target: LearnerTarget, make_config: MakeConfig) -> None:
    result = run(make_config("preference=[concise,identity]", "steps=1"), target=target)
    records = read_steps(result.output_dir)
    assert sorted((r["preference"], r["step"]) for r in records) == [
        ("concise", 0),
        ("concise", 1),
        ("identity", 0),
        ("identity", 1),
    ]
    assert set(result.summary["preferences"]) == {"concise", "identity"}
    # The fake never says "Kuro".
    assert result.summary["preferences"]["identity"]["final"]["compliance"] == 0.0


def test_latest_runs_lists_run_dirs_newest_first(
    target: LearnerTarget, make_config: MakeConfig, data_dir: Path
) -> None:
    first = run(make_config("run_name=first", "steps=1"), target=target).output_dir
    second = run(make_config("run_name=second", "steps=1"), target=target).output_dir
    (data_dir / "eval" / "not-a-run").mkdir()
    assert latest_runs(data_dir) == [second, first]
    assert latest_runs(data_dir, limit=1) == [second]
    assert latest_runs(data_dir / "nowhere") == []


def test_metrics_turned_off_are_not_measured(
    target: LearnerTarget, make_config: MakeConfig
) -> None:
    result = run(make_config("metrics=[]", "plots=true"), target=target)
    records = read_steps(result.output_dir)
    assert len(result.plots) == 3  # empty panels still draw
    keys = set(records[-1]["metrics"])
    assert {"compliance", "mean_tokens"} <= keys
    assert not keys & {"margin", "capability", "entropy", "logprob_drift"}
    assert not any(math.isnan(v) for v in records[-1]["metrics"].values() if v is not None)


def test_followup_mode_teaches_by_the_next_message_only(
    shrinking_learner: Learner, target: LearnerTarget, make_config: MakeConfig
) -> None:
    records = read_steps(run(make_config("mode=followup"), target=target).output_dir)
    adapter = "eval/concise-seed0-concise"
    assert shrinking_learner.adapter_settings(adapter).learn_from_followups is True
    assert [r["version"] for r in records] == [0, 1, 2, 3]
    assert [r["update"]["followups"] for r in records[1:]] == [1.0, 1.0, 1.0]
    links = shrinking_learner.followups(adapter)
    assert {f.text for f in links} == {"Way too long. Answer in one short sentence."}
    jobs = shrinking_learner.jobs(adapter)
    assert sorted(j.id for j in jobs) == sorted(f.job_id for f in links if f.job_id)
    # Every job came from a follow-up: none names a feedback call's key, each a link's.
    assert all((j.idempotency_key or "").startswith("followup-fu-") for j in jobs)
