"""The guard's share of an update on the embedded model (goal: at most 25%).

Runs the concise demo's updates (one sampled training answer per step, the
default ``DistillConfig``, the default guard) on a fresh adapter and reports
``guard_seconds / total_seconds`` from each update's own timings: both measured
in the same update, so the ratio does not depend on how busy the machine is.
The first step also asks the parent (version 0) and is reported apart; the row
is the median over the later steps, which reuse the parent's remembered answers.

Usage::

    python benchmarks/run.py guard --guard-steps 8
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import _measure as m

__all__ = ["run"]

SCRIPT = Path(__file__)
GOAL = 0.25


def measure_guard(steps: int, threads: int | None, models_dir: str | None) -> dict[str, Any]:
    """Child: each step's guard, train and total seconds, and its job's status."""
    m.set_threads(threads)
    from claas import Learner, Settings
    from claas.demo import FEEDBACK, TRAINING

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as data:
        cache = Path(models_dir) if models_dir else None
        with Learner(Settings(data_dir=Path(data), model_cache_dir=cache)) as learner:
            learner.init_adapter("bench/guard")
            for step in range(steps):
                question = [{"role": "user", "content": TRAINING[step % len(TRAINING)]}]
                answer = learner.chat(
                    "bench/guard", question, temperature=0.7, max_tokens=120, seed=step
                )
                job = learner.wait(learner.submit_feedback(answer.id, FEEDBACK).id)
                timings = job.timings
                rows.append(
                    {
                        "status": job.status,
                        "guard": timings["guard_seconds"],
                        "train": timings["train_seconds"],
                        "total": timings["total_seconds"],
                    }
                )
                print(
                    f"[guard] step {step + 1}: {job.status}, train {timings['train_seconds']:.2f}"
                    f" s, guard {timings['guard_seconds']:.2f} s",
                    file=sys.stderr,
                )
    return {"steps": rows}


def run(options: Any) -> list[m.Row]:
    """One row: the guard's median share of an update, steps 2 and later."""
    name = "guard share of an update (median of steps 2+)"
    steps = max(2, options.guard_steps)
    print(f"[guard] {steps} updates", file=sys.stderr)
    args = {"steps": steps, "threads": options.threads, "models_dir": options.models_dir}
    try:
        result = m.run_child(SCRIPT, "measure_guard", args)
    except RuntimeError as exc:
        return m.skipped_rows([name], f"failed: {str(exc)[-300:]}", goal=m.at_most(GOAL))
    first, *later = result["steps"]
    guard = [s["guard"] for s in later]
    total = [s["total"] for s in later]
    rejected = sum(s["status"] == "rejected" for s in result["steps"])
    return [
        m.Row(
            name=name,
            measured=f"{m.median(guard):.2f} s guard",
            reference=f"{m.median(total):.2f} s whole update",
            ratio=m.median_ratio(guard, total),
            goal=m.at_most(GOAL),
            note=(
                f"first step (the parent asked too) {first['guard'] / first['total']:.0%}; "
                f"train median {m.median([s['train'] for s in later]):.2f} s; "
                f"{len(later)} later steps; {rejected} rejected"
            ),
        )
    ]


if __name__ == "__main__":
    m.child_main({"measure_guard": measure_guard})
