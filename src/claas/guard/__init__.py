"""The guard: a candidate version is checked against its parent before it goes live.

After an update is trained and saved, and before ``latest`` moves, the
candidate answers a small fixed set of probes (:data:`GUARD_PROBES`, plus the
adapter's own "must still answer X" probes), greedily and briefly, on the
inference backend that already holds the model. It fails when it loses
capability probes its parent passed, loses one of the adapter's own probes,
answers degenerately (empty or stub answers, loops, one answer to different
questions) or, in ``strict`` mode, when the parent's answers became much less
likely under it (drift of the mean logprob). A failing candidate is kept as a
*rejected* version: listed, exportable, never served and never a parent,
until it is forced live. ``Settings.guard`` (:class:`~claas.config.GuardSettings`)
picks the mode and thresholds.
"""

from claas.guard.probes import (
    CAPABILITY_PROBES,
    GUARD_PROBES,
    Probe,
    at_least,
    contains,
    in_order,
    user_probe,
)
from claas.guard.signals import degenerate_flags, is_looping, is_stub, repetition, shared_answers
from claas.guard.verdict import Answers, Verdict, decide

__all__ = [
    "CAPABILITY_PROBES",
    "GUARD_PROBES",
    "Answers",
    "Probe",
    "Verdict",
    "at_least",
    "contains",
    "decide",
    "degenerate_flags",
    "in_order",
    "is_looping",
    "is_stub",
    "repetition",
    "shared_answers",
    "user_probe",
]
