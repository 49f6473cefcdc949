"""Ending a greedy answer early: at its fewest leading tokens that a rule accepts.

Apart from the decoding modules (which need torch) so that the guard, which
defines the rules, can cut any backend's answers the same way without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["Settled", "settled_at"]

Settled = Callable[[Sequence[int]], bool]  # whether an answer's tokens so far are enough


def settled_at(ids: Sequence[int], settled: Settled | None) -> int | None:
    """The fewest leading tokens of ``ids`` that ``settled`` accepts, if any prefix is."""
    if settled is None:
        return None
    return next((n for n in range(1, len(ids) + 1) if settled(ids[:n])), None)
