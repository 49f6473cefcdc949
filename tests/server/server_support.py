"""Helpers of the server tests: keys, fake learners, snapshots, a real uvicorn server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from claas import Learner, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

KEY_ALPHA = "key-alpha-0123456789"
KEY_BETA = "key-beta-0123456789"
KEY_ADMIN = "key-admin-0123456789"
API_KEYS = {KEY_ALPHA: ("alpha",), KEY_BETA: ("beta",), KEY_ADMIN: ("*",)}


def auth(key: str) -> dict[str, str]:
    """The Authorization header of a key."""
    return {"Authorization": f"Bearer {key}"}


def fake_learner(data_dir: Path, **settings: Any) -> Learner:
    """A learner on the fakes with its data in ``data_dir``."""
    return Learner(
        Settings(data_dir=data_dir).evolve(**settings),
        inference=FakeInference(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )


def snapshot(learner: Learner) -> dict[str, Any]:
    """Everything a request could change: adapters, their versions, live pointers, records."""
    adapters = learner.adapters()
    return {
        "adapters": adapters,
        "versions": {a: [v.version for v in learner.versions(a)] for a in adapters},
        "live": {a: learner.current_version(a).version for a in adapters},
        "records": learner.record_counts(),
    }


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
