"""The main job: watch the bundled model learn the "concise" preference.

Greedy answers to held-out questions are shown before and after; in between,
the model answers training questions (sampled) and every answer gets the same
feedback, each turned into one SDPO update that the guard (:mod:`claas.guard`)
lets go live or rejects. The answer length per step is plotted to a PNG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from claas.guard.probes import names
from claas.learner import Learner
from claas.types import DistillConfig

__all__ = [
    "CAPABILITY_CHECK",
    "DemoReport",
    "FEEDBACK",
    "HELD_OUT",
    "KEY_FACTS",
    "TRAINING",
    "run_demo",
]

FEEDBACK = "Way too long. Answer in one short sentence."

TRAINING = (
    "Why do leaves change color in the fall?",
    "How does photosynthesis work?",
    "What causes the seasons on Earth?",
    "Why does ice float on water?",
    "How do magnets work?",
    "What is a black hole?",
    "Why do we have tides?",
    "How does the heart pump blood?",
    "What makes a rainbow appear?",
    "How do plants absorb water?",
    "Why is the ocean salty?",
    "What is DNA made of?",
    "How do volcanoes form?",
    "Why do stars twinkle?",
    "How does sound travel?",
    "What causes thunder?",
)
# The held-out questions, each with word stems one of which its answer must still
# name to keep its substance.
KEY_FACTS = {
    "Why is the sky blue?": ("scatter", "Rayleigh", "wavelength"),
    "How do vaccines work?": ("immun", "antibod"),
    "What causes earthquakes?": ("plate", "fault", "tectonic"),
}
HELD_OUT = tuple(KEY_FACTS)
CAPABILITY_CHECK = ("What is the capital of France?", "paris")

Progress = Callable[[str, dict[str, Any]], None]


@attrs.frozen(kw_only=True)
class DemoReport:
    """What the demo measured."""

    adapter_id: str
    questions: tuple[str, ...]
    before: tuple[str, ...]
    after: tuple[str, ...]
    before_tokens: tuple[int, ...]
    after_tokens: tuple[int, ...]
    step_tokens: tuple[int, ...]
    step_seconds: tuple[float, ...]
    step_verdicts: tuple[str, ...]
    capability_answer: str
    capability_ok: bool
    wall_seconds: float
    plot: Path | None

    @property
    def rejected(self) -> int:
        """Steps whose version the guard rejected."""
        return sum(v.startswith("rejected") for v in self.step_verdicts)

    @property
    def facts_before(self) -> tuple[bool, ...]:
        """Per held-out question: whether the answer before learning names its key fact."""
        return _facts_kept(self.questions, self.before)

    @property
    def facts_after(self) -> tuple[bool, ...]:
        """Per held-out question: whether the answer after learning names its key fact."""
        return _facts_kept(self.questions, self.after)

    @property
    def mean_before(self) -> float:
        """Mean held-out answer length (tokens) before learning."""
        return sum(self.before_tokens) / len(self.before_tokens)

    @property
    def mean_after(self) -> float:
        """Mean held-out answer length (tokens) after learning."""
        return sum(self.after_tokens) / len(self.after_tokens)

    @property
    def change(self) -> float:
        """Relative change of the mean held-out length (-0.7 = 70% shorter)."""
        return self.mean_after / self.mean_before - 1.0


def _facts_kept(questions: Sequence[str], answers: Sequence[str]) -> tuple[bool, ...]:
    return tuple(names(*KEY_FACTS[q])(a) for q, a in zip(questions, answers, strict=True))


def _answers(
    learner: Learner, adapter_id: str, questions: Sequence[str], max_tokens: int
) -> list[Any]:
    return [
        learner.chat(
            adapter_id, [{"role": "user", "content": q}], temperature=0, max_tokens=max_tokens
        )
        for q in questions
    ]


def run_demo(
    learner: Learner,
    *,
    steps: int = 16,
    adapter_id: str = "demo/concise",
    max_tokens: int = 120,
    feedback: str = FEEDBACK,
    config: DistillConfig | None = None,
    plot_path: Path | None = Path("claas-demo.png"),
    seed: int = 0,
    progress: Progress | None = None,
) -> DemoReport:
    """Run the concise-preference demo on a fresh adapter.

    Args:
        learner: The learner to use (its settings pick model, engine, backend).
        steps: Feedback steps, one sampled training answer each.
        adapter_id: Adapter to (re)create for the demo.
        max_tokens: Answer length cap.
        feedback: The feedback given on every training answer.
        config: Update hyperparameters (default ``DistillConfig()``).
        plot_path: Where to write the PNG plot (``None``: no plot).
        seed: Sampling seed of the first step (step i uses seed + i).
        progress: Called with ``(event, data)`` for ``baseline``, ``step`` and ``final``.

    Returns:
        A :class:`DemoReport`.
    """
    notify = progress or (lambda event, data: None)
    started = time.perf_counter()
    if learner.has_adapter(adapter_id):
        learner.delete_adapter(adapter_id)
    learner.init_adapter(adapter_id)
    baseline = _answers(learner, adapter_id, HELD_OUT, max_tokens)
    notify("baseline", {"answers": baseline})
    step_tokens, step_seconds, verdicts = [], [], []
    for step in range(steps):
        question = TRAINING[step % len(TRAINING)]
        answer = learner.chat(
            adapter_id,
            [{"role": "user", "content": question}],
            temperature=0.7,
            max_tokens=max_tokens,
            seed=seed + step,
        )
        tick = time.perf_counter()
        job = learner.wait(learner.submit_feedback(answer.id, feedback, config=config).id)
        result = None if job.status == "rejected" else learner.result_of(job)
        verdict = f"rejected: {job.error}" if result is None else _verdict(result.metrics)
        step_seconds.append(time.perf_counter() - tick)
        step_tokens.append(len(answer.response_ids))
        verdicts.append(verdict)
        notify("step", {"step": step + 1, "answer": answer, "result": result, "verdict": verdict})
    final = _answers(learner, adapter_id, HELD_OUT, max_tokens)
    check = _answers(learner, adapter_id, [CAPABILITY_CHECK[0]], max_tokens)[0]
    notify("final", {"answers": final, "check": check})
    report = DemoReport(
        adapter_id=adapter_id,
        questions=HELD_OUT,
        before=tuple(c.text for c in baseline),
        after=tuple(c.text for c in final),
        before_tokens=tuple(len(c.response_ids) for c in baseline),
        after_tokens=tuple(len(c.response_ids) for c in final),
        step_tokens=tuple(step_tokens),
        step_seconds=tuple(step_seconds),
        step_verdicts=tuple(verdicts),
        capability_answer=check.text,
        capability_ok=CAPABILITY_CHECK[1] in check.text.lower(),
        wall_seconds=time.perf_counter() - started,
        plot=plot_path,
    )
    if plot_path is not None:
        plot_lengths(report, plot_path)
    return report


def _verdict(metrics: Any) -> str:
    if "guard_probe_score" not in metrics:
        return "not guarded"
    return f"passed (probes {metrics['guard_probe_score']:.0%})"


def plot_lengths(report: DemoReport, path: Path) -> Path:
    """Plot answer length per feedback step (and the held-out means) to a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from claas.errors import missing_extra

        raise missing_extra("matplotlib", "plot") from exc
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = range(1, len(report.step_tokens) + 1)
    ax.plot(steps, report.step_tokens, marker="o", label="training answer (sampled)")
    ax.axhline(report.mean_before, color="grey", linestyle="--", label="held-out mean, before")
    ax.axhline(report.mean_after, color="green", linestyle="--", label="held-out mean, after")
    ax.set_xlabel("feedback step")
    ax.set_ylabel("answer length (tokens)")
    ax.set_title(f"CLaaS demo: '{FEEDBACK}'")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
