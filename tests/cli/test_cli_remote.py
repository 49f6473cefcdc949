"""`--url`: the CLI against the real server app on loopback (uvicorn, fake learner)."""

from __future__ import annotations

import json
import socket
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import loopback
import pytest

from claas import (
    AdapterNotFound,
    BackendUnavailable,
    ClaasError,
    Client,
    InvalidConfig,
    InvalidRequest,
    Learner,
    PermissionDenied,
    QueueFull,
    Settings,
)
from claas.config import ServerSettings
from claas_server.app import create_app

Run = Callable[..., Any]
KEY = "team-key-0123"


def _serve(settings: Settings) -> Iterator[str]:
    """Run the server app for ``settings`` on a free loopback port; yield its URL."""
    learner = Learner(settings)
    try:
        with loopback.serving(create_app(learner=learner)) as url:
            yield url
    finally:
        learner.close()


@pytest.fixture
def url(data_dir: Path) -> Iterator[str]:
    """An open server (no keys) on the fakes, sharing the test's data dir."""
    yield from _serve(Settings(data_dir=data_dir, inference_backend="fake", training_engine="fake"))


@pytest.fixture
def keyed_url(data_dir: Path) -> Iterator[str]:
    """A server whose one key may use the namespace ``team`` only."""
    settings = Settings(
        data_dir=data_dir,
        inference_backend="fake",
        training_engine="fake",
        server=ServerSettings(api_keys={KEY: ("team",)}),
    )
    yield from _serve(settings)


@pytest.fixture
def remote(cli: Run, url: str) -> Run:
    """Run ``claas --json ARGS --url URL``; it must succeed; return parsed stdout."""

    def invoke(*args: str) -> Any:
        result = cli("--json", *args, "--url", url)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return invoke


def test_full_loop_through_the_server(remote: Run, observer: Learner, tmp_path: Path) -> None:
    created = remote("adapters", "init", "team/bot", "--rank", "4")
    assert (created["adapter_id"], created["version"], created["live"]) == ("team/bot", 0, True)
    assert observer.current_version("team/bot").lora["rank"] == 4

    answer = remote("chat", "team/bot", "-m", "hello", "--max-tokens", "64")
    assert answer["text"] == "[team/bot v0] You said: hello"
    assert (answer["adapter_version"], answer["finish_reason"]) == (0, "stop")
    assert observer.get_completion(answer["id"]).text == answer["text"]

    update = remote("feedback", answer["id"], "shorter", "--set", "steps=2")
    assert (update["version"], update["parent_version"]) == (1, 0)
    assert update["metrics"]["distill_loss"] == pytest.approx(0.1)
    assert observer.current_version("team/bot").distill_config["steps"] == 2  # type: ignore[index]

    raw = remote("feedback", "--adapter", "team/bot", "--prompt", "p", "--response", "r", "no")
    assert raw["version"] == 2

    versions = remote("adapters", "versions", "team/bot")
    assert [(v["version"], v["parent"], v["live"]) for v in versions] == [
        (0, None, False),
        (1, 0, False),
        (2, 1, True),
    ]
    assert remote("adapters", "ls") == [
        {
            "adapter_id": "team/bot",
            "live_version": 2,
            "versions": 3,
            "base_model": observer.settings.base_model,
            "updated": versions[-1]["created"],
        }
    ]

    assert remote("adapters", "rollback", "team/bot", "1")["version"] == 1
    assert observer.current_version("team/bot").version == 1

    exported = remote("adapters", "export", "team/bot", "--version", "2", "-o", str(tmp_path))
    assert Path(exported["path"]) == tmp_path / "team__bot__v2.zip"
    with zipfile.ZipFile(exported["path"]) as archive:
        assert json.loads(archive.read("fake_weights.json"))["updates"] == 3

    assert remote("adapters", "rm", "team/bot", "-y")["deleted_versions"] == 3
    assert observer.adapters() == []


def test_jobs_through_the_server(remote: Run, cli: Run, url: str, observer: Learner) -> None:
    remote("adapters", "init", "team/bot")
    answer = remote("chat", "team/bot", "-m", "hello")
    job = remote("feedback", answer["id"], "shorter", "--no-wait", "--idempotency-key", "k-1")
    assert (job["adapter_id"], job["idempotency_key"]) == ("team/bot", "k-1")
    done = remote("jobs", "wait", job["id"], "--timeout", "30")
    assert (done["status"], done["version"]) == ("applied", 1)
    assert observer.job(job["id"]).version == 1
    assert remote("jobs", "show", job["id"]) == done
    assert [j["id"] for j in remote("jobs", "ls", "team/bot", "--status", "applied")] == [job["id"]]
    again = remote("feedback", answer["id"], "shorter", "--idempotency-key", "k-1")
    assert again["version"] == 1  # the same job's update, not a second one
    assert observer.current_version("team/bot").version == 1
    cancel = cli("jobs", "cancel", job["id"], "--url", url)
    assert cancel.exit_code == 1 and cancel.stderr.startswith("error: Conflict:")
    missing = cli("jobs", "show", "job-nope", "--url", url)
    assert missing.exit_code == 1 and missing.stderr.startswith("error: JobNotFound:")


def test_local_and_remote_print_the_same_shapes(cli_json: Run, remote: Run) -> None:
    local = cli_json("adapters", "init", "l/bot")
    served = remote("adapters", "init", "r/bot")
    assert local.keys() == served.keys()
    local_answer = cli_json("chat", "l/bot", "-m", "hi")
    served_answer = remote("chat", "r/bot", "-m", "hi")
    assert local_answer.keys() == served_answer.keys()
    local_update = cli_json("feedback", local_answer["id"], "more")
    served_update = remote("feedback", served_answer["id"], "more")
    assert local_update.keys() == served_update.keys()
    assert local_update["metrics"] == served_update["metrics"]
    local_job = cli_json("feedback", local_answer["id"], "less", "--no-wait")
    served_job = remote("feedback", served_answer["id"], "less", "--no-wait")
    assert local_job.keys() == served_job.keys()
    assert cli_json("jobs", "ls")[0].keys() == remote("jobs", "ls")[0].keys()
    assert cli_json("adapters", "versions", "l/bot")[1].keys() == (
        remote("adapters", "versions", "r/bot")[1].keys()
    )


def test_repl_streams_from_the_server_and_learns(cli: Run, url: str, observer: Learner) -> None:
    observer.init_adapter("team/bot")
    session = "Why is the sky blue?\n/feedback Way too long.\nAnd the sea?\n/versions\n/quit\n"
    result = cli("chat", "team/bot", "--url", url, input=session)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "[team/bot v0] You said: Why is the sky blue?" in out
    assert "updated team/bot: v0 -> v1" in out
    assert "[team/bot v1] You said: And the sea?" in out
    assert "team/bot@v1> " in out
    assert observer.current_version("team/bot").version == 1


def test_server_errors_map_to_core_errors_and_exit_1(cli: Run, url: str) -> None:
    missing = cli("chat", "team/none", "-m", "hi", "--url", url)
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: AdapterNotFound:")

    cli("adapters", "init", "team/bot", "--url", url)
    again = cli("adapters", "init", "team/bot", "--url", url)
    assert again.exit_code == 1
    assert again.stderr.strip() == "error: AdapterExists: adapter 'team/bot' already exists"

    answer = json.loads(cli("--json", "chat", "team/bot", "-m", "hi", "--url", url).stdout)
    bad = cli("feedback", answer["id"], "x", "--set", "alpha=2", "--url", url)
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: InvalidConfig: DistillConfig.alpha=2")
    unknown = cli("feedback", answer["id"], "x", "--set", "lr=1", "--url", url)
    assert unknown.exit_code == 1
    # As in process: the core's DistillConfig check, made before anything is sent.
    assert unknown.stderr.startswith("error: InvalidConfig:") and "lr" in unknown.stderr
    assert "VersionNotFound" in cli("adapters", "rollback", "team/bot", "5", "--url", url).stderr


def test_api_keys(cli: Run, keyed_url: str, observer: Learner) -> None:
    anonymous = cli("adapters", "ls", "--url", keyed_url)
    assert anonymous.exit_code == 1
    assert anonymous.stderr.startswith("error: PermissionDenied: authentication failed")
    assert "--api-key" in anonymous.stderr

    with_flag = cli("adapters", "init", "team/bot", "--url", keyed_url, "--api-key", KEY)
    assert with_flag.exit_code == 0, with_flag.output
    from_env = cli("adapters", "ls", "--url", keyed_url, env={"CLAAS_API_KEY": KEY})
    assert "team/bot" in from_env.stdout

    other = cli("adapters", "init", "other/bot", "--url", keyed_url, "--api-key", KEY)
    assert other.exit_code == 1
    assert "PermissionDenied" in other.stderr and "'other'" in other.stderr
    assert observer.adapters() == ["team/bot"]


def test_url_from_the_environment(cli: Run, url: str, observer: Learner) -> None:
    result = cli("adapters", "init", "team/bot", env={"CLAAS_URL": url})
    assert result.exit_code == 0, result.output
    assert observer.adapters() == ["team/bot"]


def test_unreachable_or_malformed_urls(cli: Run) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    down = cli("adapters", "ls", "--url", closed)
    assert down.exit_code == 1
    assert down.stderr.startswith("error: BackendUnavailable: cannot reach the CLaaS server")
    malformed = cli("adapters", "ls", "--url", "ftp://127.0.0.1")
    assert malformed.exit_code == 1
    assert "InvalidRequest" in malformed.stderr


def test_remote_client_rejects_ids_before_sending(url: str) -> None:
    with Client(url) as client, pytest.raises(InvalidRequest):
        client.versions("../../v1/feedback")


def _answering(status: int, body: Any) -> Client:
    """A Client whose every request gets ``status`` with ``body`` (JSON, or text)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return Client("http://claas.test", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"error": {"message": "gone", "code": "adapter_not_found"}}, AdapterNotFound),
        (400, {"error": {"message": "bad", "code": "invalid_config"}}, InvalidConfig),
        (403, {"error": {"message": "no", "code": "something_new"}}, PermissionDenied),
        (422, {"error": {"message": "schema", "code": "validation_error"}}, InvalidRequest),
        (503, {"error": {"message": "down"}}, BackendUnavailable),
        (429, {"error": {"message": "full", "code": "rate_limit_exceeded"}}, QueueFull),
        (429, {"error": {"message": "slow down"}}, QueueFull),
        (400, {"error": {"message": "odd", "code": "rate_limit_exceeded"}}, QueueFull),
        (502, "<html>bad gateway</html>", ClaasError),
    ],
)
def test_error_bodies_pick_the_named_class_then_the_status(
    status: int, body: Any, expected: type[ClaasError]
) -> None:
    with _answering(status, body) as client, pytest.raises(ClaasError) as raised:
        client.adapters()
    assert type(raised.value) is expected
    if isinstance(body, str):
        assert "HTTP 502" in str(raised.value)
    else:
        assert str(raised.value) == body["error"]["message"]
