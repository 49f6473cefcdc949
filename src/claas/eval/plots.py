"""Plots of a run (matplotlib, PNG): compliance and capability, margins, collapse.

Each function takes the step records (as in ``steps.jsonl``) and writes one
PNG; :func:`plot_run` writes all three into a run directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from claas.errors import missing_extra
from claas.eval.runlog import PLOT_FILES

__all__ = ["plot_collapse", "plot_compliance", "plot_margins", "plot_run"]

Records = Sequence[Mapping[str, Any]]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise missing_extra("matplotlib", "eval") from exc
    return plt


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _series(records: Records, key: str) -> dict[str, tuple[list[int], list[float]]]:
    """Per preference, the steps where ``key`` was measured and its values."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in sorted(records, key=lambda r: (r["preference"], r["step"])):
        value = record["metrics"].get(key)
        if value is None:
            continue
        steps, values = series.setdefault(record["preference"], ([], []))
        steps.append(int(record["step"]))
        values.append(float(value))
    return series


def _panel(ax: Any, records: Records, key: str, title: str, ylabel: str, **style: Any) -> None:
    for name, (steps, values) in _series(records, key).items():
        ax.plot(steps, values, marker="o", markersize=3, label=name, **style)
    ax.set_title(title)
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_xlabel("feedback step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_compliance(records: Records, path: Path) -> Path:
    """Compliance and capability per step, and mean answer length per step."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _panel(left, records, "compliance", "Held-out compliance and capability", "fraction")
    for name, (steps, values) in _series(records, "capability").items():
        left.plot(
            steps, values, linestyle="--", marker="s", markersize=3, label=f"{name}: capability"
        )
    left.set_ylim(-0.05, 1.05)
    left.legend(fontsize=8)
    _panel(right, records, "mean_tokens", "Answer length", "tokens")
    for name, (steps, values) in _series(records, "train_tokens").items():
        right.plot(steps, values, linestyle=":", alpha=0.6, label=f"{name}: training sample")
    right.legend(fontsize=8)
    return _save(fig, path)


def plot_margins(records: Records, path: Path) -> Path:
    """Logprob margin of preferred over dispreferred responses, total and per token."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _panel(left, records, "margin", "Margin (sum of logprobs)", "nats")
    _panel(right, records, "margin_per_token", "Margin (mean token logprob)", "nats/token")
    return _save(fig, path)


def plot_collapse(records: Records, path: Path) -> Path:
    """Collapse signals: token entropy, similarity and looping of answers, logprob drift."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    _panel(axes[0], records, "entropy", "Token entropy (top-K)", "nats")
    _panel(axes[1], records, "self_similarity", "Answers alike (across prompts)", "bigram Jaccard")
    _panel(axes[2], records, "repetition", "Answers looping (within one)", "repeated 4-grams")
    _panel(axes[3], records, "logprob_drift", "Anchor logprob drift", "nats/token")
    for record in records:
        if record.get("alerts"):
            for ax in axes:
                ax.axvline(int(record["step"]), color="red", alpha=0.15)
    return _save(fig, path)


def plot_run(records: Records, out_dir: Path) -> list[Path]:
    """Write the three plots of a run into ``out_dir`` and return their paths."""
    compliance, margins, collapse = (out_dir / name for name in PLOT_FILES)
    return [
        plot_compliance(records, compliance),
        plot_margins(records, margins),
        plot_collapse(records, collapse),
    ]
