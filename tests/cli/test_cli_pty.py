"""`claas chat` as a user runs it: a real process on a pseudo-terminal, the real model.

The session chats, gives feedback, and sees the next answer come from the new
version; every wait is bounded.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")
WAIT = 120.0  # seconds per step; generous because CI shares two cores


class Terminal:
    """A child process whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.screen = ""
        self._seen = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.screen += ANSI.sub("", data.decode("utf-8", "replace")).replace("\r", "")
        return bool(data)

    def expect(self, text: str, timeout: float = WAIT) -> str:
        """Wait for ``text`` after what earlier calls matched; return the output up to it."""
        deadline = time.monotonic() + timeout
        while (found := self.screen.find(text, self._seen)) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.5)):
                raise AssertionError(f"no {text!r} within {timeout:.0f}s; output:\n{self.screen}")
        before = self.screen[self._seen : found]
        self._seen = found + len(text)
        return before

    def send(self, line: str) -> None:
        """Type a line and press Enter."""
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> int:
        """Wait for the child to exit (kill it after a while); return its exit code."""
        try:
            while self._read(0.2):
                if self.proc.poll() is not None:
                    break
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            os.close(self.master)


def test_chat_feedback_changes_the_serving_version(tmp_path: Path, models_dir: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "TERM": "xterm-256color",
        "CLAAS_DATA_DIR": str(tmp_path / "data"),
        "CLAAS_MODEL_CACHE_DIR": str(models_dir),
    }
    claas = [sys.executable, "-m", "claas_cli"]
    init = subprocess.run(
        [*claas, "adapters", "init", "me/pty", "--rank", "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert init.returncode == 0, init.stderr
    assert "me/pty v0" in init.stdout

    chat = [*claas, "chat", "me/pty", "--max-tokens", "16", "--temperature", "0"]
    term = Terminal(chat, env)
    try:
        term.expect("live version v0")
        term.expect("me/pty@v0> ")
        term.send("What is the capital of France?")
        echoed_and_answer = term.expect("[me/pty@v0] chatcmpl-").strip().splitlines()
        assert len(echoed_and_answer) >= 2, "the model gave an empty answer"
        term.expect("me/pty@v0> ")

        term.send("/feedback Answer in one short sentence.")
        term.expect("updated me/pty: v0 -> v1")
        term.expect("me/pty@v1> ")

        term.send("Name a color.")
        term.expect("[me/pty@v1] chatcmpl-")
        term.expect("me/pty@v1> ")

        term.send("/versions")
        listing = term.expect("me/pty@v1> ")
        assert "* v1" in listing and "v0" in listing

        term.send("/quit")
    finally:
        code = term.close()
    assert code == 0, term.screen
