"""The math of the eval: pure functions over numbers and strings.

Nothing here calls a model. Logprobs are natural logs; entropies are in nats.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "check_alerts",
    "jaccard",
    "logprob_margin",
    "mean",
    "mean_token_entropy",
    "ngrams",
    "repetition",
    "self_similarity",
    "topk_entropy",
]

_TOKEN = re.compile(r"\w+", re.UNICODE)


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; ``nan`` for no values (so a missing metric is never 0)."""
    items = list(values)
    return math.fsum(items) / len(items) if items else math.nan


def topk_entropy(logprobs_K: Sequence[float]) -> float:
    """Entropy of one position's distribution from its top-K logprobs.

    The mass outside the top K is one extra atom ``1 - sum(p)``, so the value
    is a lower bound of the full-vocabulary entropy that is exact when K covers
    the support. Works in log space; non-finite entries (``-inf``) carry no mass.

    Args:
        logprobs_K: Logprobs of the K most likely tokens at one position.

    Returns:
        The entropy in nats (0 for an empty list).
    """
    finite = [lp for lp in logprobs_K if math.isfinite(lp)]
    if not finite:
        return 0.0
    probs = [math.exp(min(lp, 0.0)) for lp in finite]
    entropy = -math.fsum(p * min(lp, 0.0) for p, lp in zip(probs, finite, strict=True))
    tail = 1.0 - math.fsum(probs)
    if tail > 1e-12:
        entropy -= tail * math.log(tail)
    return max(entropy, 0.0)


def mean_token_entropy(top_logprobs_TK: Sequence[Sequence[float]]) -> float:
    """Mean top-K entropy over the positions of one response (``nan`` if none)."""
    return mean(topk_entropy(position) for position in top_logprobs_TK)


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of lower-cased word n-grams (the whole text as one gram if shorter)."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    words = [w.lower() for w in _TOKEN.findall(text)]
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[tuple[str, ...]], b: set[tuple[str, ...]]) -> float:
    """Jaccard similarity of two sets; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def self_similarity(texts: Sequence[str], *, n: int = 2) -> float:
    """Mean pairwise Jaccard similarity of the texts' word n-grams.

    Answers to different prompts share few n-grams; a collapsing model gives
    the same answer to everything and drives this towards 1.

    Returns:
        A value in [0, 1], or ``nan`` for fewer than two texts.
    """
    grams = [ngrams(text, n) for text in texts]
    pairs = [jaccard(a, b) for a, b in itertools.combinations(grams, 2)]
    return mean(pairs)


def repetition(text: str, *, n: int = 4) -> float:
    """Fraction of the word n-grams of one text that repeat an earlier one.

    A degenerate answer that loops ("The answer is: The answer is: ...") scores
    near 1; ordinary prose near 0. A text shorter than ``n`` words scores 0.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    words = [w.lower() for w in _TOKEN.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def logprob_margin(
    preferred: Sequence[float], dispreferred: Sequence[float]
) -> tuple[float, float]:
    """How much more likely the preferred response is than the dispreferred one.

    Args:
        preferred: Per-token logprobs of the preferred response.
        dispreferred: Per-token logprobs of the dispreferred response.

    Returns:
        ``(total, per_token)``: the difference of summed logprobs (sequence
        log-likelihood ratio) and the difference of mean token logprobs.

    Raises:
        ValueError: If either response has no tokens.
    """
    if not preferred or not dispreferred:
        raise ValueError("both responses need at least one token to compare")
    total = math.fsum(preferred) - math.fsum(dispreferred)
    per_token = math.fsum(preferred) / len(preferred) - math.fsum(dispreferred) / len(dispreferred)
    return total, per_token


def check_alerts(
    metrics: Mapping[str, float | None],
    baseline: Mapping[str, float | None],
    thresholds: Mapping[str, float | None],
) -> list[str]:
    """Compare one step's metrics with the baseline and return alert messages.

    Thresholds (a ``None`` or missing one is off):

    - ``entropy_drop``: token entropy fell below ``(1 - x)`` times the baseline.
    - ``max_self_similarity``: answers to different prompts look alike.
    - ``max_repetition``: answers loop, repeating their own word 4-grams.
    - ``max_logprob_drift``: mean anchor logprob moved by more than x nats/token.
    - ``max_capability_drop``: capability score fell by more than x (absolute).
    """
    alerts: list[str] = []

    def known(value: float | None) -> bool:
        return value is not None and math.isfinite(value)

    entropy, base_entropy = metrics.get("entropy"), baseline.get("entropy")
    limit = thresholds.get("entropy_drop")
    if limit is not None and known(entropy) and known(base_entropy):
        assert entropy is not None and base_entropy is not None
        if entropy < (1.0 - limit) * base_entropy:
            alerts.append(f"entropy collapse: {entropy:.3f} < (1-{limit}) x {base_entropy:.3f}")
    similarity, limit = metrics.get("self_similarity"), thresholds.get("max_self_similarity")
    if limit is not None and known(similarity):
        assert similarity is not None
        if similarity > limit:
            alerts.append(f"answers alike: self-similarity {similarity:.3f} > {limit}")
    looping, limit = metrics.get("repetition"), thresholds.get("max_repetition")
    if limit is not None and known(looping):
        assert looping is not None
        if looping > limit:
            alerts.append(f"answers loop: repetition {looping:.3f} > {limit}")
    drift, limit = metrics.get("logprob_drift"), thresholds.get("max_logprob_drift")
    if limit is not None and known(drift):
        assert drift is not None
        if abs(drift) > limit:
            alerts.append(f"logprob drift: {drift:+.3f} nats/token beyond +-{limit}")
    score, base_score = metrics.get("capability"), baseline.get("capability")
    limit = thresholds.get("max_capability_drop")
    if limit is not None and known(score) and known(base_score):
        assert score is not None and base_score is not None
        if base_score - score > limit:
            alerts.append(f"forgetting: capability {score:.2f} vs {base_score:.2f} at baseline")
    return alerts
