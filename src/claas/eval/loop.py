"""The eval loop: baseline, then sample, feed back and measure, step by step.

Per preference: create a fresh adapter and measure it (step 0); then for each
step sample ``batch_size`` training answers, apply the feedback to them as one
update (``mode: followup``: follow up on the rejected ones in the conversation
instead, :mod:`claas.eval.followup_mode`), and measure the new version. Every step is appended to
``steps.jsonl`` before the next begins, so a killed run resumes after its last
written step, with the adapter rolled back to that step's version if an update
had already landed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from claas.errors import AdapterNotFound, Conflict, InvalidConfig
from claas.eval.config import EvalConfig, Preference
from claas.eval.followup_mode import followup_step
from claas.eval.measure import finite, measure, sample_metrics
from claas.eval.metrics import check_alerts
from claas.eval.runlog import (
    FORMAT_VERSION,
    RUN_FILE,
    STEPS_FILE,
    StepLog,
    check_run_file,
    remove_run_files,
)
from claas.eval.summary import summarize, write_json
from claas.eval.targets import EvalTarget, LearnerTarget

__all__ = ["Progress", "RunResult", "open_target", "run"]

log = logging.getLogger("claas.eval")
Progress = Callable[[str, dict[str, Any]], None]


@attrs.frozen(kw_only=True)
class RunResult:
    """What a finished run produced.

    Attributes:
        output_dir: The run directory.
        summary: The contents of ``summary.json``.
        plots: The PNG files written.
    """

    output_dir: Path
    summary: dict[str, Any]
    plots: tuple[Path, ...]


def open_target(config: EvalConfig) -> EvalTarget:
    """The embedded learner (``engine: local``) or a server client (``engine: remote``)."""
    if config.engine == "remote":
        from claas.eval.remote import RemoteTarget

        assert config.server.url is not None
        return RemoteTarget(
            config.server.url,
            api_key=config.server.api_key,
            timeout=config.server.timeout,
            lora=config.lora,
        )
    from claas.config import Settings
    from claas.learner import Learner

    clash = sorted({"data_dir", "base_model"} & set(config.settings))
    if clash:
        raise InvalidConfig(f"set {clash} at the top level of the eval config, not in settings")
    settings = Settings.load(
        data_dir=config.resolved_data_dir(), base_model=config.base_model, **config.settings
    )
    return LearnerTarget(Learner(settings), lora=config.lora, owns_learner=True)


def run(
    cfg: EvalConfig | Mapping[str, Any],
    *,
    target: EvalTarget | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run (or resume) an eval and write its records, summary and plots.

    Args:
        cfg: An :class:`EvalConfig`, or a composed Hydra config / mapping.
        target: What to drive instead of the one the config names (e.g. a
            :class:`LearnerTarget` around a learner built on fakes).
        progress: Called with ``(event, data)``: ``baseline`` and ``step``
            after each record is written (data: the record), ``done`` at the end.

    Returns:
        The run's :class:`RunResult`.

    Raises:
        Conflict: The output dir holds a different run, or its adapter is gone.
        InvalidConfig: The configuration is invalid.
    """
    config = cfg if isinstance(cfg, EvalConfig) else EvalConfig.from_mapping(cfg)
    notify = progress or (lambda event, data: None)
    out = config.resolved_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    if config.fresh:
        remove_run_files(out)
    resumed = check_run_file(out, config.name, config.fingerprint())
    if not resumed:
        write_json(out / RUN_FILE, _run_file(config))
    steps = StepLog(out / STEPS_FILE)
    started = time.perf_counter()
    owned = target is None
    active = target if target is not None else open_target(config)
    try:
        for preference in config.preferences:
            _run_preference(active, preference, config, steps, notify)
    finally:
        if owned:
            active.close()
    summary = summarize(steps.records, config, elapsed=time.perf_counter() - started)
    plots: tuple[Path, ...] = ()
    if config.plots:
        from claas.eval.plots import plot_run

        plots = tuple(plot_run(steps.records, out))
    summary["plots"] = [p.name for p in plots]
    write_json(out / "summary.json", summary)
    notify("done", {"summary": summary, "output_dir": str(out)})
    return RunResult(output_dir=out, summary=summary, plots=plots)


def _run_file(config: EvalConfig) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "name": config.name,
        "fingerprint": config.fingerprint(),
        "created": time.time(),
    }


def _run_preference(
    target: EvalTarget,
    preference: Preference,
    config: EvalConfig,
    steps: StepLog,
    notify: Progress,
) -> None:
    adapter_id = config.adapter_id(preference.name)
    done = steps.steps(preference.name)
    if not done:
        tick = time.perf_counter()
        version = target.reset_adapter(
            adapter_id, seed=config.seed, learn_from_followups=config.mode == "followup"
        )
        metrics, details = measure(target, adapter_id, preference, config, step=0, baseline=None)
        record = _record(preference, adapter_id, 0, version, metrics, details)
        record["seconds"] = time.perf_counter() - tick
        steps.append(record)
        notify("baseline", record)
        done = [record]
    else:
        _restore(target, adapter_id, done[-1])
    baseline = done[0]["metrics"]
    for step in range(int(done[-1]["step"]) + 1, config.steps + 1):
        record = _step(target, adapter_id, preference, config, step, baseline)
        steps.append(record)
        for alert in record["alerts"]:
            log.warning("%s step %d: %s", preference.name, step, alert)
        notify("step", record)


def _restore(target: EvalTarget, adapter_id: str, last: Mapping[str, Any]) -> None:
    """Put the adapter back at the last recorded version (an update may have landed since)."""
    try:
        current = target.current_version(adapter_id)
    except AdapterNotFound as exc:
        raise Conflict(
            f"the run's records name adapter {adapter_id!r}, which no longer exists; "
            "pass fresh=true to start the run over"
        ) from exc
    if current != last["version"]:
        log.info("rolling %s back from v%s to v%s", adapter_id, current, last["version"])
        target.rollback(adapter_id, int(last["version"]))


def _step(
    target: EvalTarget,
    adapter_id: str,
    preference: Preference,
    config: EvalConfig,
    step: int,
    baseline: Mapping[str, float | None],
) -> dict[str, Any]:
    tick = time.perf_counter()
    first = (step - 1) * config.batch_size
    prompts = [
        preference.prompts[(first + i) % len(preference.prompts)] for i in range(config.batch_size)
    ]
    samples = [
        target.chat(
            adapter_id,
            prompt,
            max_tokens=config.sampling.max_tokens,
            temperature=config.sampling.temperature,
            seed=config.seed * 100_003 + first + i,
        )
        for i, prompt in enumerate(prompts)
    ]
    sampled = time.perf_counter()
    if config.mode == "followup":
        version, update = followup_step(target, adapter_id, preference, prompts, samples)
    else:
        version, update = target.feedback(
            adapter_id,
            [s.completion_id for s in samples],
            preference.feedback,
            config.distill.to_dict(),
        )
    updated = time.perf_counter()
    metrics, details = measure(target, adapter_id, preference, config, step=step, baseline=baseline)
    train_metrics, train_details = sample_metrics(samples, preference)
    metrics.update(train_metrics)
    details.update(
        train_details,
        train_prompts=prompts,
        train_answers=[s.text for s in samples],
        parent_version=samples[0].version,
    )
    record = _record(preference, adapter_id, step, version, metrics, details)
    record["update"] = {k: finite(v) for k, v in update.items()}
    record["alerts"] = check_alerts(metrics, baseline, config.alerts)
    done = time.perf_counter()
    record["timings"] = {
        "sample": sampled - tick,
        "update": updated - sampled,
        "measure": done - updated,
    }
    record["seconds"] = done - tick
    return record


def _record(
    preference: Preference,
    adapter_id: str,
    step: int,
    version: int,
    metrics: Mapping[str, float | None],
    details: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "preference": preference.name,
        "step": step,
        "adapter_id": adapter_id,
        "version": version,
        "metrics": dict(metrics),
        "details": dict(details),
        "alerts": [],
        "time": time.time(),
    }
