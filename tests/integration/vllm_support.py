"""A vLLM server process owned by the tests: start, wait until ready, stop, restart.

CLaaS never starts or stops vLLM; the tests do, to check how CLaaS behaves
when the server goes away and comes back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from claas.config import DEFAULT_BASE_MODEL

READY_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class VLLMServer:
    """One ``vllm.entrypoints.openai.api_server`` process on 127.0.0.1 (restartable)."""

    def __init__(self, python: str, models_dir: Path, model_dir: str, log_path: Path) -> None:
        self.python = python
        self.models_dir = models_dir
        self.model_dir = model_dir
        self.served_name = DEFAULT_BASE_MODEL
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.dev_mode = False
        self.ready_seconds: list[float] = []
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model_dir,
            "--served-model-name",
            self.served_name,
            "--enable-lora",
            "--max-lora-rank",
            "64",
            "--max-loras",
            "4",
            "--max-model-len",
            "2048",
            "--dtype",
            "bfloat16",
            "--max-logprobs",
            "100",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def start(self, *, dev_mode: bool = False) -> None:
        """Start the server and wait until ``/health`` answers."""
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": "2",
        }
        if dev_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        self.dev_mode = dev_mode
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start (dev_mode={dev_mode}) ====\n".encode())
            self._process = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT_S:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    self.ready_seconds.append(time.monotonic() - started)
                    return
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"vLLM not ready after {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server's process group (the API server and its engine processes)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self, *, dev_mode: bool = False) -> None:
        self.stop()
        self.start(dev_mode=dev_mode)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
