"""`claas models`, `claas serve`, `claas eval` and the help of every command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

Run = Callable[..., Any]

COMMANDS = [
    [],
    ["demo"],
    ["chat"],
    ["feedback"],
    ["models"],
    ["serve"],
    ["eval"],
    ["adapters"],
    *(["adapters", sub] for sub in ("init", "ls", "versions", "rollback", "export", "rm")),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "claas")
def test_every_command_has_help(cli: Run, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("group", [[], ["adapters"]], ids=["claas", "adapters"])
def test_a_group_without_a_command_shows_help_as_a_usage_error(cli: Run, group: list[str]) -> None:
    result = cli(*group)
    assert result.exit_code == 2
    assert "Usage:" in result.output


def test_models_lists_the_bundled_one_first(cli: Run, cli_json: Run, data_dir: Path) -> None:
    local = data_dir / "models" / "my-model"
    local.mkdir(parents=True)
    (local / "config.json").write_text("{}")
    models = cli_json("models")
    assert [(m["name"], m["kind"], m["selected"]) for m in models] == [
        ("bundled:smollm2-135m-instruct", "bundled", True),
        (str(local), "local", False),
    ]
    chosen = cli("--json", "--base-model", str(local), "models")
    assert [m["selected"] for m in json.loads(chosen.stdout)] == [False, True]
    table = cli("models").stdout
    assert "bundled" in table and "local" in table


def test_serve_refuses_a_public_host_without_keys(cli: Run, data_dir: Path) -> None:
    result = cli("serve", "--host", "0.0.0.0", "--port", "9")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: InvalidConfig: refusing to listen on '0.0.0.0'")
    assert not (data_dir / "claas.db").exists()


def test_serve_says_what_to_install(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "claas_server.serve", None)
    result = cli("serve")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: MissingDependency:")
    assert "pip install claas-server" in result.stderr


def test_serve_runs_the_server(fake_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **fake_env}
    command = [sys.executable, "-m", "claas_cli", "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "claas serve did not answer within 60 s"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        created = httpx.post(f"{url}/v1/adapters", json={"adapter_id": "team/bot"}, timeout=10)
        assert created.status_code == 201, created.text
        assert (Path(fake_env["CLAAS_DATA_DIR"]) / "adapters" / "team" / "bot").is_dir()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_eval_says_what_to_install(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "claas.eval", None)
    result = cli("eval", "steps=1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: MissingDependency:")
    assert "claas[eval]" in result.stderr


FAKE_EVAL = [
    "steps=1",
    "settings.inference_backend=fake",
    "settings.training_engine=fake",
    "capability.every=0",
    "plots=false",
]


def test_eval_runs_the_harness_with_overrides(cli: Run, tmp_path: Path) -> None:
    data = tmp_path / "it's data"
    result = cli("--data-dir", str(data), "eval", *FAKE_EVAL, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert Path(report["output_dir"]).parent == data / "eval"
    concise = report["summary"]["preferences"]["concise"]
    assert concise["final_version"] == 1
    assert (data / "adapters" / "eval").is_dir()
    assert "concise step   1 v1" in result.stderr


def test_eval_prints_the_composed_config(cli: Run) -> None:
    result = cli("--base-model", "some/model", "eval", "--cfg", "steps=3", "seed=7")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert {"steps: 3", "seed: 7", "base_model: some/model"} <= set(lines)


def test_eval_rejects_bad_overrides_and_the_config_flag(cli: Run, tmp_path: Path) -> None:
    unknown = cli("eval", "no_such_key=1")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: InvalidConfig:")
    flagged = cli("--config", str(tmp_path / "claas.toml"), "eval", "steps=1")
    assert flagged.exit_code == 2
