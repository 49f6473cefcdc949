"""Scripted answers and a loopback server for the eval tests (a module of its own: every
test folder has a conftest)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import loopback

from claas import Learner
from claas.types import AdapterVersion, ChatMessage

SENTENCE = "This is one more detail about {topic}."


def shrinking_answer(topic: str, version: int) -> str:
    """Four sentences at version 0, one fewer per version, down to one."""
    count = max(4 - version, 1)
    return " ".join(SENTENCE.format(topic=topic) for _ in range(count))


def shrinking_responder(messages: Sequence[ChatMessage], adapter: AdapterVersion | None) -> str:
    """Answer with ``shrinking_answer`` for the adapter's version."""
    version = adapter.version if adapter is not None else 0
    return shrinking_answer(messages[-1].content.rstrip("?."), version)


@contextlib.contextmanager
def serving(learner: Learner) -> Iterator[str]:
    """Serve ``learner`` (the real server app) on loopback; yield its URL."""
    from claas_server import create_app

    with loopback.serving(create_app(learner=learner)) as url:
        yield url
