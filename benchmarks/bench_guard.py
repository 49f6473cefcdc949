"""The guard's share of an update on the embedded model (goal: at most 25%).

Runs the concise demo's updates (one sampled training answer per step, the
default ``DistillConfig``, the default guard) on a fresh adapter and reports,
per step and as medians, ``guard_seconds / total_seconds`` from the feedback
timings: both measured in the same update, so the ratio does not depend on how
busy the machine is. The first step also asks the parent (version 0) and is
reported apart; later steps reuse the parent's remembered answers.

Usage::

    python benchmarks/bench_guard.py --steps 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from claas import Learner, Settings
from claas.demo import FEEDBACK, TRAINING

GOAL = 0.25


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as data:
        settings = Settings(data_dir=Path(data), model_cache_dir=args.models_dir)
        with Learner(settings) as learner:
            learner.init_adapter("bench/guard")
            shares = []
            for step in range(args.steps):
                question = [{"role": "user", "content": TRAINING[step % len(TRAINING)]}]
                answer = learner.chat(
                    "bench/guard", question, temperature=0.7, max_tokens=120, seed=step
                )
                job = learner.wait(learner.submit_feedback(answer.id, FEEDBACK).id)
                guard, total = job.timings["guard_seconds"], job.timings["total_seconds"]
                train = job.timings["train_seconds"]
                shares.append(guard / total)
                print(
                    f"step {step + 1}: {job.status}, train {train:.2f}s, guard {guard:.2f}s, "
                    f"total {total:.2f}s, guard share {guard / total:.0%}"
                )
    later = shares[1:] or shares
    median = statistics.median(later)
    print(f"first step (parent asked too): guard share {shares[0]:.0%}")
    print(f"median guard share, later steps: {median:.0%} (goal <= {GOAL:.0%})")
    return 0 if median <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
