"""``mode: followup``: the preference taught by the user's next message, not by feedback.

Each training answer the preference's verifier rejects gets a follow-up: the
conversation is sent on with the preference's ``followup`` text (default: its
``feedback`` text) as the user's next message. CLaaS recognises the answer it
served, records the follow-up and, since the eval's adapter learns from
follow-ups, turns it into a feedback job; the step waits for those jobs. An
answer the verifier accepts gets no follow-up: the user moves on. No call to
``feedback`` is made in this mode.
"""

from __future__ import annotations

from collections.abc import Sequence

from claas.eval.config import Preference
from claas.eval.targets import EvalTarget, Sample

__all__ = ["followup_step"]


def followup_step(
    target: EvalTarget,
    adapter_id: str,
    preference: Preference,
    prompts: Sequence[str],
    samples: Sequence[Sample],
) -> tuple[int, dict[str, float]]:
    """Follow up on the rejected answers and wait; return the live version and what happened.

    The metrics are the last job's, plus ``followups`` (jobs made),
    ``applied`` and ``skipped`` (their outcomes).
    """
    text = preference.followup or preference.feedback
    update: dict[str, float] = {}
    counts = {"followups": 0.0, "applied": 0.0, "skipped": 0.0}
    version = target.current_version(adapter_id)
    for prompt, sample in zip(prompts, samples, strict=True):
        if preference.verifier(sample.text):
            continue
        status, version, update = target.follow_up(adapter_id, prompt, sample, text)
        counts["followups"] += 1
        if status in ("applied", "skipped"):
            counts[status] += 1
    return version, {**update, **counts}
