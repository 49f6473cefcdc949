"""Run a synchronous ``ChatStream`` on one worker thread and read it from async code.

A backend may hold a (re-entrant) model lock from the first token to the last, so
starting a stream and every step of it must run on the same thread: stepping a
generator from whichever threadpool thread is free would release the lock from
the wrong thread, or let another request on the lock-holding thread re-enter it.
:func:`open_stream` starts the stream on a dedicated executor thread and returns
only once the first text is ready, so a bad request fails as a normal HTTP error
before any byte of the response is sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any

from claas.learner import ChatStream

__all__ = ["PinnedStream", "open_stream"]

_DELTA, _END, _ERROR, _STARTED = "delta", "end", "error", "started"


class PinnedStream:
    """Text deltas of a chat stream produced on its own thread.

    Attributes:
        stream: The core's :class:`~claas.learner.ChatStream` (``id``,
            ``adapter_version``; ``completion`` once iteration ended).
    """

    def __init__(
        self, stream: ChatStream, queue: asyncio.Queue[tuple[str, Any]], stop: threading.Event
    ) -> None:
        self.stream = stream
        self._queue = queue
        self._stop = stop

    async def deltas(self) -> AsyncIterator[str]:
        """Yield text deltas; raise the producer's error if one happens mid-stream."""
        try:
            while True:
                kind, value = await self._queue.get()
                if kind == _DELTA:
                    yield value
                elif kind == _END:
                    return
                elif kind == _ERROR:
                    raise value
        finally:
            self._stop.set()

    def cancel(self) -> None:
        """Ask the producer to stop after its current token."""
        self._stop.set()


async def open_stream(start: Callable[[], ChatStream], executor: Executor) -> PinnedStream:
    """Start ``start()`` on ``executor`` and wait for the stream to begin.

    Raises:
        Whatever ``start()`` raises (request errors, unknown adapter, ...).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            stop.set()

    def produce() -> None:
        try:
            stream = start()
        except BaseException as exc:
            put(_ERROR, exc)
            return
        put(_STARTED, stream)
        deltas = iter(stream)
        try:
            for delta in deltas:
                if stop.is_set():
                    break
                put(_DELTA, delta)
            put(_END, None)
        except BaseException as exc:
            put(_ERROR, exc)
        finally:
            close = getattr(deltas, "close", None)
            if close is not None:
                close()  # on this thread, so locks taken here are released here

    loop.run_in_executor(executor, produce)
    try:
        kind, value = await queue.get()
    except asyncio.CancelledError:
        stop.set()
        raise
    if kind == _ERROR:
        raise value
    return PinnedStream(value, queue, stop)
