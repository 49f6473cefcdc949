"""The interactive chat loop: talk to an adapter and teach it as you go.

A plain ``input()`` loop, so it runs on any terminal, a pseudo-terminal or a
pipe. Lines starting with ``/`` are commands; anything else is a chat turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

from claas import ClaasError, Completion, LearnerLike
from claas_cli.render import answer_tag, update_line, versions_table

__all__ = ["HELP", "Repl"]

HELP = """\
Type a message to chat. Commands:
  /feedback TEXT   learn from TEXT as feedback on the last answer (a new version)
  /versions        list the adapter's versions (* = live)
  /rollback N      serve version N again
  /reset           start a new conversation (what was learned stays)
  /help            show this help
  /quit            leave (Ctrl-D works too)"""


class Repl:
    """A chat session with one adapter.

    Args:
        client: Where chats and updates go (a Learner, or a Client of a server).
        adapter_id: The adapter to talk to.
        console: Where answers and messages are printed.
        sampling: Decoding options for every answer (``max_tokens``, ...).
        system: An optional system prompt.
        read: Reads one line after showing a prompt (``input``); raises
            ``EOFError`` at the end of input.
    """

    def __init__(
        self,
        client: LearnerLike,
        adapter_id: str,
        *,
        console: Console,
        sampling: dict[str, Any],
        system: str | None = None,
        read: Callable[[str], str] = input,
    ) -> None:
        self.client = client
        self.adapter_id = adapter_id
        self.console = console
        self.sampling = sampling
        self.system = system
        self.read = read
        self.history: list[dict[str, str]] = []
        self.last: Completion | None = None
        self.version: int | None = None
        self._commands: dict[str, Callable[[str], bool]] = {
            "/feedback": self._feedback,
            "/versions": self._versions,
            "/rollback": self._rollback,
            "/reset": self._reset,
            "/help": self._help,
            "/quit": self._quit,
            "/exit": self._quit,
        }

    @property
    def prompt(self) -> str:
        """The input prompt, naming the live version: ``ns/name@v3> ``."""
        return f"{self.adapter_id}@v{self.version}> "

    def run(self) -> None:
        """Loop until ``/quit`` or end of input.

        Raises:
            ClaasError: If the adapter cannot be reached at the start (e.g.
                it does not exist); later errors are printed and the loop goes on.
        """
        self.version = self._live_version()
        self.console.print(
            f"Chatting with [bold]{escape(self.adapter_id)}[/] (live version v{self.version}). "
            "/help for commands, /quit to leave."
        )
        while True:
            try:
                line = self.read(self.prompt).strip()
            except EOFError:
                self.console.print()
                return
            except KeyboardInterrupt:
                self.console.print()
                continue
            if line and not self.handle(line):
                return

    def handle(self, line: str) -> bool:
        """Act on one input line; return False when the session should end."""
        name, _, arg = line.partition(" ")
        try:
            if not line.startswith("/"):
                return self._chat(line)
            command = self._commands.get(name)
            if command is None:
                self.console.print(f"unknown command {escape(name)}; /help lists them")
                return True
            return command(arg.strip())
        except ClaasError as exc:
            self.console.print(f"[red]error:[/] {type(exc).__name__}: {escape(str(exc))}")
            return True

    # -- commands ------------------------------------------------------------------------

    def _chat(self, text: str) -> bool:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages += [*self.history, {"role": "user", "content": text}]
        stream = self.client.chat_stream(self.adapter_id, messages, **self.sampling)
        for delta in stream:
            self._write(delta)
        assert stream.completion is not None, "a finished stream records its completion"
        answer = stream.completion
        self.console.print()
        self.console.print(answer_tag(answer))
        self.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer.text},
        ]
        self.last = answer
        self.version = answer.adapter_version
        return True

    def _write(self, text: str) -> None:
        self.console.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    def _feedback(self, text: str) -> bool:
        if not text:
            self.console.print("usage: /feedback TEXT")
        elif self.last is None:
            self.console.print("nothing to give feedback on yet: chat first")
        else:
            with self.console.status("learning from feedback..."):
                update = self.client.feedback(self.last.id, text)
            self.version = update.version
            self.console.print(f"updated {update_line(update)}")
        return True

    def _versions(self, _: str) -> bool:
        versions = self.client.versions(self.adapter_id)
        live = self.client.current_version(self.adapter_id).version
        self.console.print(versions_table(self.adapter_id, versions, live))
        return True

    def _rollback(self, arg: str) -> bool:
        if not arg.isdigit():
            self.console.print("usage: /rollback N (a version number from /versions)")
            return True
        info = self.client.rollback(self.adapter_id, int(arg))
        self.version = info.version
        self.console.print(f"{escape(self.adapter_id)} now serves [bold]v{info.version}[/]")
        return True

    def _reset(self, _: str) -> bool:
        self.history.clear()
        self.last = None
        self.console.print("new conversation")
        return True

    def _help(self, _: str) -> bool:
        self.console.print(HELP, markup=False, highlight=False, soft_wrap=True)
        return True

    def _quit(self, _: str) -> bool:
        return False

    def _live_version(self) -> int:
        return self.client.current_version(self.adapter_id).version
