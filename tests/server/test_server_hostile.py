"""Hostile input against a real uvicorn server: never a 5xx, never a change.

Raw requests go through ``http.client`` so that paths reach the server exactly
as written (an HTTP library would normalise ``..`` away).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from server_support import KEY_ALPHA, auth, fake_learner, serving, snapshot

from claas import Learner, Settings
from claas.inference.base import StreamDelta
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer
from claas_server import create_app

LIMIT = 64 * 1024
USER = [{"role": "user", "content": "hi"}]


class Raw:
    """Raw HTTP requests to a running server."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        chunked: bool = False,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            all_headers = {**auth(KEY_ALPHA), **(headers or {})}
            if body is not None and "Content-Type" not in all_headers:
                all_headers["Content-Type"] = "application/json"
            if chunked:
                conn.request(
                    method, path, body=iter([body or b""]), headers=all_headers, encode_chunked=True
                )
            else:
                conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, payload: Any) -> tuple[int, bytes]:
        return self.request(method, path, json.dumps(payload).encode())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Raw, Learner]]:
    """A running keyed server with alpha/bot at v1 and beta/bot at v0."""
    learner = fake_learner(
        tmp_path / "data", api_keys={KEY_ALPHA: ("alpha",)}, max_request_bytes=LIMIT
    )
    learner.init_adapter("alpha/bot")
    learner.init_adapter("beta/bot")
    answer = learner.chat("alpha/bot", USER)
    learner.feedback(answer.id, "Shorter.")
    with serving(create_app(learner=learner)) as base_url:
        yield Raw(base_url), learner
    learner.close()


def _check(world: tuple[Raw, Learner], calls: list[tuple[Any, ...]]) -> None:
    raw, learner = world
    before = snapshot(learner)
    for call in calls:
        method, path, *rest = call
        if rest and isinstance(rest[0], bytes):
            status, body = raw.request(method, path, rest[0])
        elif rest:
            status, body = raw.json(method, path, rest[0])
        else:
            status, body = raw.request(method, path)
        assert 400 <= status < 500, (call, status, body[:300])
        assert "error" in json.loads(body), (call, body[:300])
        assert snapshot(learner) == before, call
    assert (learner.settings.data_dir / "adapters" / "alpha" / "bot").is_dir()


TRAVERSAL_IDS = [
    "../alpha",
    "alpha/..",
    "alpha/../beta",
    "../../etc/passwd",
    "/etc/passwd",
    "alpha/bot/../../beta/bot",
    "alpha/.bot",
    "alpha/bot\x00",
    "alpha\\..\\beta",
    "alpha/" + "x" * 300,
    "./alpha",
    "alpha/bot/extra",
]

TRAVERSAL_PATHS = [
    "/v1/adapters/../beta/bot/versions",
    "/v1/adapters/alpha/../../beta/versions",
    "/v1/adapters/%2E%2E/bot/versions",
    "/v1/adapters/alpha/%2E%2E%2F%2E%2E%2Fbeta/versions",
    "/v1/adapters/..%2Fbeta/bot/versions",
    "/v1/adapters/alpha/..%5C..%5Cbeta/versions",
    "/v1/adapters/alpha/bot%00/versions",
    "/v1/adapters/%FF%FE/bot/versions",
    "/v1/adapters/alpha/.hidden/versions",
    "/v1/adapters/alpha//versions",
]


def test_traversal_in_paths(world: tuple[Raw, Learner]) -> None:
    calls: list[tuple[Any, ...]] = []
    for path in TRAVERSAL_PATHS:
        calls += [
            ("GET", path),
            ("GET", path.replace("/versions", "/export")),
            ("POST", path.replace("/versions", "/rollback"), {"version": 0}),
            ("DELETE", path.removesuffix("/versions")),
            ("GET", "/dashboard" + path.removeprefix("/v1").removesuffix("/versions")),
        ]
    raw, learner = world
    before = snapshot(learner)
    for method, path, *body in calls:
        status, _ = raw.json(method, path, body[0]) if body else raw.request(method, path)
        # 404 (no such route) or 400/403 (bad id, other namespace): never success or 5xx.
        assert status in (400, 401, 403, 404, 405), (method, path, status)
        assert snapshot(learner) == before, (method, path)


def test_traversal_in_bodies(world: tuple[Raw, Learner]) -> None:
    calls: list[tuple[Any, ...]] = []
    for bad in TRAVERSAL_IDS:
        calls += [
            ("POST", "/v1/adapters", {"adapter_id": bad}),
            ("POST", "/v1/chat/completions", {"model": bad, "messages": USER}),
            ("POST", "/v1/chat/completions", {"model": bad, "messages": USER, "stream": True}),
            ("POST", "/v1/completions", {"model": bad, "prompt": "x"}),
            ("POST", "/v1/score", {"model": bad, "messages": USER, "response": "r"}),
            (
                "POST",
                "/v1/feedback",
                {"adapter_id": bad, "messages": USER, "response": "r", "feedback": "x"},
            ),
            ("GET", f"/v1/feedback?adapter_id={bad.replace(chr(0), '%00')}"),
        ]
    _check(world, calls)


def test_unknown_ids(world: tuple[Raw, Learner]) -> None:
    _check(
        world,
        [
            ("GET", "/v1/adapters/alpha/nope/versions"),
            ("GET", "/v1/adapters/alpha/nope/export"),
            ("GET", "/v1/adapters/alpha/bot/export?version=7"),
            ("POST", "/v1/adapters/alpha/nope/rollback", {"version": 0}),
            ("POST", "/v1/adapters/alpha/bot/rollback", {"version": 99}),
            ("DELETE", "/v1/adapters/alpha/nope"),
            ("POST", "/v1/feedback", {"completion_id": "chatcmpl-nope", "feedback": "x"}),
            ("POST", "/v1/chat/completions", {"model": "alpha/nope", "messages": USER}),
            ("GET", "/v1/models/alpha/nope"),
        ],
    )


def test_oversized_bodies(world: tuple[Raw, Learner]) -> None:
    raw, learner = world
    before = snapshot(learner)
    big = json.dumps(
        {"model": "alpha/bot", "messages": [{"role": "user", "content": "x" * (LIMIT + 1)}]}
    ).encode()
    for chunked in (False, True):
        status, body = raw.request("POST", "/v1/chat/completions", big, chunked=chunked)
        assert status == 413, (chunked, body[:200])
        assert json.loads(body)["error"]["code"] == "payload_too_large"
    # A Content-Length that lies about a huge body is refused before reading it.
    status, _ = raw.request("POST", "/v1/feedback", b"{}", headers={"Content-Length": str(10**12)})
    assert status in (400, 413)
    # Under the byte limit but over the core's limits: 413 as well.
    long_feedback = {
        "adapter_id": "alpha/bot",
        "messages": USER,
        "response": "r",
        "feedback": "x" * 9000,
    }
    assert raw.json("POST", "/v1/feedback", long_feedback)[0] == 413
    batch = {
        "adapter_id": "alpha/bot",
        "items": [{"messages": USER, "response": "r", "feedback": "x"}] * 65,
    }
    assert raw.json("POST", "/v1/feedback", batch)[0] == 413
    assert snapshot(learner) == before


def test_wrong_types(world: tuple[Raw, Learner]) -> None:
    _check(
        world,
        [
            ("POST", "/v1/chat/completions", {"model": "alpha/bot", "messages": "hi"}),
            ("POST", "/v1/chat/completions", {"model": 42, "messages": USER}),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "alpha/bot", "messages": [{"role": "boss"}]},
            ),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "alpha/bot", "messages": USER, "max_tokens": "ten"},
            ),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "alpha/bot", "messages": USER, "temperature": "hot"},
            ),
            ("POST", "/v1/chat/completions", {"model": "alpha/bot", "messages": USER, "seed": -1}),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "alpha/bot", "messages": USER, "seed": 2**70},
            ),
            ("POST", "/v1/chat/completions", {"model": "alpha/bot", "messages": USER, "stop": [1]}),
            (
                "POST",
                "/v1/chat/completions",
                {
                    "model": "alpha/bot",
                    "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
                },
            ),
            ("POST", "/v1/chat/completions", [1, 2, 3]),
            ("POST", "/v1/chat/completions", "just a string"),
            ("POST", "/v1/chat/completions", None),
            ("POST", "/v1/feedback", {"completion_id": 7, "feedback": "x"}),
            ("POST", "/v1/feedback", {"completion_id": "c", "feedback": ["x"]}),
            ("POST", "/v1/feedback", {"items": {"feedback": "x"}}),
            (
                "POST",
                "/v1/feedback",
                {
                    "adapter_id": "alpha/bot",
                    "messages": USER,
                    "response": "r",
                    "feedback": "x",
                    "config": {"steps": "many"},
                },
            ),
            (
                "POST",
                "/v1/feedback",
                {
                    "adapter_id": "alpha/bot",
                    "messages": USER,
                    "response": "r",
                    "feedback": "x",
                    "config": {"steps": 10**6},
                },
            ),
            (
                "POST",
                "/v1/feedback",
                {
                    "adapter_id": "alpha/bot",
                    "messages": USER,
                    "response": "r",
                    "feedback": "x",
                    "config": {"adam_betas": [1, 2, 3]},
                },
            ),
            ("POST", "/v1/adapters/alpha/bot/rollback", {"version": "1"}),
            ("POST", "/v1/adapters/alpha/bot/rollback", {"version": -1}),
            ("POST", "/v1/adapters/alpha/bot/rollback", {"version": 1.5}),
            ("POST", "/v1/adapters", {"adapter_id": "alpha/new", "rank": "big"}),
            ("POST", "/v1/adapters", {"adapter_id": "alpha/new", "rank": 10**9}),
            ("POST", "/v1/adapters", {"adapter_id": "alpha/new", "target_modules": ["rm -rf /"]}),
            ("GET", "/v1/adapters/alpha/bot/export?version=abc"),
            ("GET", "/v1/feedback?limit=0"),
            ("GET", "/v1/feedback?limit=100000000000000000000000"),
            ("POST", "/v1/score", {"model": "alpha/bot", "messages": USER, "response": 5}),
        ],
    )


def test_malformed_bytes(world: tuple[Raw, Learner]) -> None:
    nested = b"[" * 50_000 + b"]" * 50_000
    _check(
        world,
        [
            (
                "POST",
                "/v1/chat/completions",
                b'{"model": "alpha/bot", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            ),
            ("POST", "/v1/feedback", b'{"completion_id": "\xc3\x28", "feedback": "x"}'),
            ("POST", "/v1/feedback", b"\x00\x01\x02"),
            ("POST", "/v1/feedback", b'{"feedback": "x", '),
            (
                "POST",
                "/v1/chat/completions",
                b'{"model": "alpha/bot", "messages": [], "temperature": NaN}',
            ),
            (
                "POST",
                "/v1/chat/completions",
                b'{"model": "alpha/bot", "messages": '
                b'[{"role": "user", "content": "x"}], "temperature": Infinity}',
            ),
            ("POST", "/v1/feedback", nested),
            ("POST", "/v1/adapters", b""),
        ],
    )


@pytest.mark.parametrize("max_tokens", [10**9, 2**63, 10**30, 32769])
def test_huge_max_tokens(world: tuple[Raw, Learner], max_tokens: int) -> None:
    body = {"model": "alpha/bot", "messages": USER, "max_tokens": max_tokens}
    _check(
        world,
        [
            ("POST", "/v1/chat/completions", body),
            ("POST", "/v1/chat/completions", {**body, "stream": True}),
            ("POST", "/v1/chat/completions", {**body, "max_completion_tokens": max_tokens}),
            (
                "POST",
                "/v1/completions",
                {"model": "alpha/bot", "prompt": "x", "max_tokens": max_tokens},
            ),
        ],
    )


class SlowLockingInference(FakeInference):
    """Streams one word every 20 ms while holding a re-entrant model lock."""

    def __init__(self) -> None:
        super().__init__(responder=lambda messages, adapter: " ".join(["word"] * 200))
        self.model_lock = threading.RLock()
        self.sent = 0

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[StreamDelta]:
        inner = super().stream(*args, **kwargs)

        def deltas() -> Iterator[StreamDelta]:
            with self.model_lock:
                for delta in inner:
                    time.sleep(0.02)
                    self.sent += 1
                    yield delta

        return deltas()


def test_client_hanging_up_mid_stream_stops_generation(tmp_path: Path) -> None:
    backend = SlowLockingInference()
    learner = Learner(
        Settings(data_dir=tmp_path / "data"),
        inference=backend,
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    with serving(create_app(learner=learner)) as base_url:
        parts = urlsplit(base_url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        body = json.dumps({"model": "base", "messages": USER, "stream": True, "max_tokens": 4000})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.read1(200)  # the stream has started
        conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        conn.close()
        deadline = time.monotonic() + 10
        while not backend.model_lock.acquire(blocking=False):
            assert time.monotonic() < deadline, "the stream kept the model lock"
            time.sleep(0.02)
        backend.model_lock.release()
        assert backend.sent < 150, "generation went on for a client that had left"
        # The server still answers.
        raw = Raw(base_url)
        status, _ = raw.json("POST", "/v1/chat/completions", {"model": "base", "messages": USER})
        assert status == 200
    learner.close()
