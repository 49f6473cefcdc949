"""Feedback to effect: from the ``feedback`` call to the first token of the new version.

A ``Learner`` (local training) serves a chat on adapter ``bench/latency``, then each
round calls ``feedback`` on that answer and at once opens a streamed chat; the clock
stops at its first text. Right after, the same chat is asked again, now of a warm
version: its time to first token is the chat's own latency, which any answer pays.

Non-training part = whole - training computation (teacher and student forwards,
backward, AdamW: the engine's ``step_seconds`` times the steps) - that warm first-token
time. What remains is what continual learning adds: building the sample, loading and
saving adapter and optimizer state, publishing the version, loading it into the
inference backend, and anything the first answer of a new version pays extra. The goal
is on its share of the whole, taken round by round.

Runs with local inference, and with the vLLM backend when a vLLM is available.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _measure as m

__all__ = ["run"]

SCRIPT = Path(__file__)
ADAPTER = "bench/latency"
QUESTION = "Explain in detail how photosynthesis works and why it matters for life on Earth."
FEEDBACK = "Way too long. Answer in one short sentence."


def measure_latency(
    *,
    backend: str,
    vllm_url: str | None,
    rounds: int,
    threads: int | None,
    models_dir: str | None,
) -> dict[str, Any]:
    """Child: ``rounds`` feedback-to-first-token measurements after one warm-up round."""
    m.set_threads(threads)
    from claas import Learner, Settings
    from claas.config import VllmSettings
    from claas.types import DistillConfig

    tmp = Path(tempfile.mkdtemp(prefix="claas-bench-latency-"))
    extra: dict[str, Any] = {"model_cache_dir": models_dir} if models_dir else {}
    if backend == "vllm":
        extra["vllm"] = VllmSettings(url=vllm_url)
    settings = Settings(data_dir=tmp, inference_backend=backend, **extra)
    messages = [{"role": "user", "content": QUESTION}]
    config = DistillConfig()
    out: dict[str, list[float]] = {
        k: []
        for k in ("whole", "train", "engine", "save", "publish", "first_token", "steady", "other")
    }

    def first_token() -> float:
        started = time.perf_counter()
        stream = learner.chat_stream(ADAPTER, messages, max_tokens=8, temperature=0)
        next(iter(stream))
        seconds = time.perf_counter() - started
        for _ in stream:  # let the chat finish and be recorded
            pass
        assert stream.adapter_version == learner.current_version(ADAPTER).version
        return seconds

    try:
        with Learner(settings) as learner:
            learner.init_adapter(ADAPTER)
            served = learner.chat(ADAPTER, messages, max_tokens=100, temperature=0)
            for i in range(rounds + 1):  # round 0 warms up (LoRA injection, first loads)
                started = time.perf_counter()
                result = learner.feedback(served.id, FEEDBACK, config=config)
                updated = time.perf_counter() - started
                first = first_token()  # the new version's first answer
                steady = first_token()  # the same chat once that version is warm
                if i > 0:
                    _record(out, result, config.steps, updated, first, steady)
            tokens = (len(served.prompt_ids), len(served.response_ids))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"series": out, "prompt_tokens": tokens[0], "response_tokens": tokens[1]}


def _record(
    out: dict[str, list[float]],
    result: Any,
    steps: int,
    updated: float,
    first: float,
    steady: float,
) -> None:
    timings = result.timings
    parts = {
        "train": result.metrics["step_seconds"] * steps,
        "save": timings["save_seconds"],
        "publish": timings["publish_seconds"],
        "first_token": first,
    }
    parts["engine"] = timings["train_seconds"] - parts["train"]  # state load/save in the engine
    out["whole"].append(updated + first)
    out["other"].append(updated + first - sum(parts.values()))  # sample, records, queue
    out["steady"].append(steady)
    for key, value in parts.items():
        out[key].append(value)


def _row(label: str, result: dict[str, Any]) -> m.Row:
    s = result["series"]
    rest = [w - t - c for w, t, c in zip(s["whole"], s["train"], s["steady"], strict=True)]
    parts = ", ".join(
        f"{name} {m.median(s[key]) * 1000:.0f} ms"
        for name, key in (
            ("training compute", "train"),
            ("engine state load/save", "engine"),
            ("store publish", "save"),
            ("backend publish/reload", "publish"),
            ("first token of the new version", "first_token"),
            ("first token once warm", "steady"),
            ("sample and records", "other"),
        )
    )
    return m.Row(
        name=f"feedback->first token ({label}): non-training share",
        measured=f"{m.median(rest):.3g} s not training",
        reference=f"{m.median(s['whole']):.3g} s whole",
        ratio=m.median_ratio(rest, s["whole"]),
        goal=m.at_most(0.20),
        note=(
            f"medians: {parts}; sample {result['prompt_tokens']} prompt + "
            f"{result['response_tokens']} response tokens; {len(s['whole'])} rounds"
        ),
    )


def run(options: Any) -> list[m.Row]:
    """The local-inference row, then the vLLM row (or its reason for skipping)."""
    rows = []
    vllm = options.vllm
    for backend in ("local", "vllm"):
        label = f"{backend} inference, local training"
        if backend == "vllm" and vllm.url is None:
            rows += m.skipped_rows(
                [f"feedback->first token ({label})"], vllm.reason, m.at_most(0.20)
            )
            continue
        print(f"[latency] {backend}: {options.latency_repeats} rounds", file=sys.stderr)
        args = {
            "backend": backend,
            "vllm_url": vllm.url,
            "rounds": options.latency_repeats,
            "threads": options.threads,
            "models_dir": options.models_dir,
        }
        try:
            result = m.run_child(SCRIPT, "measure_latency", args)
        except RuntimeError as exc:
            rows += m.skipped_rows(
                [f"feedback->first token ({label})"], f"failed: {str(exc)[-300:]}", m.at_most(0.20)
            )
            continue
        rows.append(_row(label, result))
    return rows


if __name__ == "__main__":
    m.child_main({"measure_latency": measure_latency})
