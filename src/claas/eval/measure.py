"""One measurement of an adapter: compliance, margins, capability, collapse signals.

Every answer here is decoded with the ``measure`` sampling options (greedy by
default), so two measurements of the same version give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from claas.eval.config import EvalConfig, Preference
from claas.eval.metrics import (
    logprob_margin,
    mean,
    mean_token_entropy,
    repetition,
    self_similarity,
)
from claas.eval.probes import CAPABILITY_PROBES, run_probes
from claas.eval.targets import EvalTarget, Sample
from claas.eval.verifiers import KeepsFact

__all__ = ["Measurement", "capability_due", "finite", "measure", "sample_metrics"]

Measurement = tuple[dict[str, float | None], dict[str, Any]]


def finite(value: float) -> float | None:
    """The value, or ``None`` when it is not a finite number (JSON has no NaN)."""
    return float(value) if math.isfinite(value) else None


def capability_due(config: EvalConfig, step: int) -> bool:
    """Whether the capability probes run at ``step`` (always at the baseline and the end)."""
    if "capability" not in config.metrics:
        return False
    every = config.capability.every
    return step == 0 or step >= config.steps or (every > 0 and step % every == 0)


def sample_metrics(samples: list[Sample], preference: Preference) -> Measurement:
    """Compliance and length of sampled training answers."""
    passed = [bool(preference.verifier(s.text)) for s in samples]
    metrics = {
        "train_compliance": finite(mean(float(p) for p in passed)),
        "train_tokens": finite(mean(s.n_tokens for s in samples)),
    }
    return metrics, {"train_passed": passed}


def measure(
    target: EvalTarget,
    adapter_id: str,
    preference: Preference,
    config: EvalConfig,
    *,
    step: int,
    baseline: Mapping[str, float | None] | None,
) -> Measurement:
    """Measure the adapter's live version.

    Args:
        target: What answers and scores.
        adapter_id: The adapter under test.
        preference: Its preference (verifier, held-out probes, pairs).
        config: The run's options (which metric families, decoding).
        step: The step just finished (0 = baseline, before any feedback).
        baseline: The step-0 metrics (``None`` when measuring the baseline).

    Returns:
        ``(metrics, details)``: flat numbers (``None`` = not measured) and the
        texts behind them.
    """
    collapse = "collapse" in config.metrics
    answers = [
        target.chat(
            adapter_id,
            prompt,
            max_tokens=config.measure.max_tokens,
            temperature=config.measure.temperature,
            seed=config.seed + index,
            top_logprobs=config.top_logprobs if collapse else 0,
        )
        for index, prompt in enumerate(preference.probes)
    ]
    passed = [bool(preference.verifier(a.text)) for a in answers]
    metrics: dict[str, float | None] = {
        "compliance": finite(mean(float(p) for p in passed)),
        "mean_tokens": finite(mean(a.n_tokens for a in answers)),
    }
    details: dict[str, Any] = {"answers": [a.text for a in answers], "passed": passed}
    if preference.facts:
        metrics.update(_content(preference, answers, passed, details))
    if "margin" in config.metrics and preference.pairs:
        metrics.update(_margins(target, adapter_id, preference))
    if capability_due(config, step):
        result = run_probes(
            target, adapter_id, CAPABILITY_PROBES, max_tokens=config.capability.max_tokens
        )
        metrics.update(
            capability=result.score, knowledge=result.knowledge, instruction=result.instruction
        )
        details["capability_failed"] = result.failed
    if collapse:
        metrics.update(_collapse(target, adapter_id, answers, config, baseline))
    return metrics, details


def _content(
    preference: Preference, answers: list[Sample], passed: list[bool], details: dict[str, Any]
) -> dict[str, float | None]:
    """Content kept (the answer names its key fact) and both at once, over probes with facts."""
    kept = {
        prompt: KeepsFact(any_of=preference.facts[prompt])(answer.text)
        for prompt, answer in zip(preference.probes, answers, strict=True)
        if prompt in preference.facts
    }
    both = [
        ok and kept[prompt]
        for prompt, ok in zip(preference.probes, passed, strict=True)
        if prompt in kept
    ]
    details["facts_kept"] = kept
    return {
        "content_kept": finite(mean(float(k) for k in kept.values())),
        "compliant_with_content": finite(mean(float(b) for b in both)),
    }


def _margins(
    target: EvalTarget, adapter_id: str, preference: Preference
) -> dict[str, float | None]:
    margins = [
        logprob_margin(
            target.score(adapter_id, pair.prompt, pair.preferred),
            target.score(adapter_id, pair.prompt, pair.dispreferred),
        )
        for pair in preference.pairs
    ]
    return {
        "margin": finite(mean(total for total, _ in margins)),
        "margin_per_token": finite(mean(per_token for _, per_token in margins)),
    }


def _collapse(
    target: EvalTarget,
    adapter_id: str,
    answers: list[Sample],
    config: EvalConfig,
    baseline: Mapping[str, float | None] | None,
) -> dict[str, float | None]:
    # Entropy needs the alternatives' logprobs; a target that reports none gives no value.
    entropies = [mean_token_entropy(a.top_logprobs) for a in answers if a.top_logprobs]
    anchor = mean(mean(target.score(adapter_id, a.prompt, a.response)) for a in config.anchors)
    base_anchor = anchor if baseline is None else baseline.get("anchor_logprob")
    drift = anchor - base_anchor if base_anchor is not None else math.nan
    return {
        "entropy": finite(mean(entropies)),
        "self_similarity": finite(self_similarity([a.text for a in answers])),
        "repetition": finite(mean(repetition(a.text) for a in answers)),
        "anchor_logprob": finite(anchor),
        "logprob_drift": finite(drift),
    }
