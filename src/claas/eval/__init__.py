"""The eval harness: does feedback move the model, and what does it cost?

For each selected preference (``concise``, ``no_emoji``, ``identity`` or your
own), a fresh adapter is measured, then taught by text feedback step by step,
and measured after every step: compliance by the preference's verifier,
logprob margins of preferred over dispreferred responses, capability probes
(forgetting) and collapse signals, with alerts on thresholds. Runs against the
embedded model or any CLaaS server, configured with Hydra::

    python -m claas.eval preference=concise steps=16

    from claas.eval import main
    result = main(["preference=concise", "steps=4"])
    result.summary["preferences"]["concise"]["final"]["compliance"]

A run lives in ``<data_dir>/eval/<run name>/`` (``steps.jsonl``, ``summary.json``,
PNG plots); rerunning with the same name resumes it. :func:`latest_runs` lists
runs for a dashboard. Needs the ``eval`` extra (hydra-core, matplotlib, httpx).
"""

from __future__ import annotations

from claas.eval.cli import main
from claas.eval.config import EvalConfig, Preference, compose
from claas.eval.loop import RunResult, run
from claas.eval.runlog import PLOT_FILES, latest_runs, read_steps, read_summary
from claas.eval.targets import EvalTarget, LearnerTarget, Sample

__all__ = [
    "PLOT_FILES",
    "EvalConfig",
    "EvalTarget",
    "LearnerTarget",
    "Preference",
    "RunResult",
    "Sample",
    "compose",
    "latest_runs",
    "main",
    "read_steps",
    "read_summary",
    "run",
]
