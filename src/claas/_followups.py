"""Recognising follow-ups in chat requests and, where an adapter asks, learning from them.

:meth:`Followups.observe` runs on every chat request for an adapter, before
generation: each assistant turn that a user turn follows is reduced to its
:func:`~claas.followups.conversation_key` and looked up among the adapter's
recorded completions in one indexed query. A match records the link
(completion -> the user's next message) whatever the settings; if the adapter
has ``learn_from_followups`` on, a feedback job is submitted for the earlier
completion with the follow-up as hindsight text. The job is only queued, never
waited for, and its idempotency key is derived from the link, so a client that
resends the conversation any number of times creates one job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from claas.config import Settings
from claas.errors import ClaasError
from claas.followups import AdapterSettings, FollowUp, conversation_key, followup_id
from claas.jobs.model import FeedbackJob
from claas.records import RecordsBackend
from claas.types import ChatMessage, CompletionFeedback, DistillConfig, Feedback

__all__ = ["Followups", "Submit"]

Submit = Callable[..., FeedbackJob]
"""``Learner.submit_feedback_batch``: items, ``adapter_id=``, ``config=``, ``idempotency_key=``."""


class Followups:
    """Follow-up links and per-adapter learning settings of one learner.

    Args:
        settings: ``settings.followups`` gives the default and the skip threshold.
        records: Where completions, links and adapter settings are recorded.
        submit: Submits a feedback job and returns at once.
    """

    def __init__(self, settings: Settings, records: RecordsBackend, submit: Submit) -> None:
        self._settings = settings
        self._records = records
        self._submit = submit

    def settings_of(self, adapter_id: str) -> AdapterSettings:
        """The adapter's stored settings, or the installation default if none were stored."""
        stored = self._records.adapter_settings(adapter_id)
        if stored is not None:
            return stored
        return AdapterSettings(learn_from_followups=self._settings.followups.learn_from_followups)

    def configure(self, adapter_id: str, *, learn_from_followups: bool | None) -> AdapterSettings:
        """Change the named settings of the adapter (``None`` keeps a value); return them all."""
        current = self.settings_of(adapter_id)
        if learn_from_followups is None:
            learn_from_followups = current.learn_from_followups
        updated = AdapterSettings(learn_from_followups=learn_from_followups)
        self._records.set_adapter_settings(adapter_id, updated)
        return updated

    def observe(self, adapter_id: str | None, messages: Sequence[ChatMessage]) -> list[FollowUp]:
        """Record the follow-ups this conversation reveals (and submit their jobs if asked).

        Returns:
            The links newly recorded by this call (a resent conversation: none).
        """
        if adapter_id is None:
            return []  # the base model has no adapter to learn into
        turns = {
            conversation_key(adapter_id, messages[:i], messages[i].content): i
            for i in range(len(messages) - 1)
            if messages[i].role == "assistant" and messages[i + 1].role == "user"
        }
        matched = self._records.match_completions(adapter_id, list(turns))
        created = []
        for key, completion_id in matched.items():
            text = messages[turns[key] + 1].content
            link = FollowUp(
                id=followup_id(completion_id, text),
                completion_id=completion_id,
                adapter_id=adapter_id,
                text=text,
                created=time.time(),
            )
            link, new = self._records.add_followup(link)
            if new:
                created.append(self._learn(link) if self._learns(adapter_id) else link)
        return created

    def _learns(self, adapter_id: str) -> bool:
        return self.settings_of(adapter_id).learn_from_followups

    def _learn(self, link: FollowUp) -> FollowUp:
        """Submit the follow-up's feedback job; record the job, or why it was refused."""
        item = CompletionFeedback(completion_id=link.completion_id, text=link.text)
        items: list[Feedback] = [item]
        followups = self._settings.followups
        config = DistillConfig(
            hindsight="followup",
            skip_below=followups.followup_skip_below,
            skip_reference=followups.followup_reference,
            steps=followups.followup_steps,
        )
        try:
            job = self._submit(
                items,
                adapter_id=link.adapter_id,
                config=config,
                idempotency_key="followup-" + link.id,
            )
        except ClaasError as exc:  # a refused job (queue full, too long) must not fail the chat
            error = f"{type(exc).__name__}: {exc}"
            return self._records.set_followup_job(link.id, job_id=None, error=error)
        return self._records.set_followup_job(link.id, job_id=job.id, error=None)
