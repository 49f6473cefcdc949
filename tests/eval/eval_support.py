"""Scripted answers and a loopback server for the eval tests (a module of its own: every
test folder has a conftest)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence

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
    """Serve ``learner`` (the real server app) with uvicorn on loopback; yield its URL."""
    import uvicorn

    from claas_server import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(learner=learner), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
