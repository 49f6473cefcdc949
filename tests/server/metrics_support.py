"""Read a ``/metrics`` scrape with prometheus_client's own parser, not by substring."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def families(text: str) -> dict[str, Metric]:
    """The scrape's metric families by name (a counter's name without ``_total``)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels``; KeyError if it is absent."""
    found = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return found[(name, frozenset(labels.items()))]


def settled(scrape: Callable[[], str], name: str, expected: float, **labels: str) -> str:
    """Scrape until sample ``name`` reads ``expected`` (job metrics are fed by the worker,
    which may count a job just after a waiting request returned); return that scrape.
    """
    deadline = time.monotonic() + 10
    while True:
        text = scrape()
        try:
            if value(text, name, **labels) == expected or time.monotonic() > deadline:
                return text
        except KeyError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.02)
