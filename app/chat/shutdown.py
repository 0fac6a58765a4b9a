"""Shutdown grace owned by the app, so it holds under any ASGI server, not only `python -m app`.

On SIGTERM (or SIGINT) the server stops taking connections and waits for open ones; streamed
answers may run for `grace` more seconds. Then each one still open is cut: its turn is cancelled
(the partial answer is saved, as for Stop) and the stream ends with an error event asking the
user to retry, one log line each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

RETRY_MESSAGE = "The server is restarting and stopped this answer. Please retry in a moment."
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StreamCutter:
    """Knows the task of every open stream; after the grace it cancels those still running."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self._streams: dict[asyncio.Task[Any], bool] = {}  # task -> cut by us
        self._timer: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def open_stream(self) -> Iterator[Callable[[], bool]]:
        """Register the current task as a stream; yields `was_cut()` for its relay to ask."""
        task = asyncio.current_task()
        assert task is not None
        self._streams[task] = False
        try:
            yield lambda: self._streams.get(task, False)
        finally:
            self._streams.pop(task, None)

    def shutting_down(self) -> None:
        """Start the grace period (idempotent); called from the signal hook, on the loop."""
        if self._timer is None:
            logger.info(
                "shutdown.grace_started",
                extra={"streams_open": len(self._streams), "grace_seconds": self.grace_seconds},
            )
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.grace_seconds, self.cut_all)

    def cut_all(self) -> None:
        for task, cut in list(self._streams.items()):
            if not cut and not task.done():
                self._streams[task] = True
                task.cancel()
                logger.info("shutdown.stream_cut")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


@contextlib.contextmanager
def grace_on_signals(cutter: StreamCutter) -> Iterator[None]:
    """Chain our hook to the handlers the server installed (uvicorn's, usually), while running."""
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def hook(signum: int, frame: FrameType | None) -> None:
        handler = previous.get(signum)
        if callable(handler):
            handler(signum, frame)
        loop.call_soon_threadsafe(cutter.shutting_down)

    try:
        for signum in _SIGNALS:
            previous[signum] = signal.signal(signum, hook)
    except ValueError:
        # Not the main thread (an embedded server in tests): the host owns the signals.
        for installed, handler in previous.items():
            signal.signal(installed, handler)
        previous.clear()
    try:
        yield
    finally:
        for installed, handler in previous.items():
            # Put the server's handler back only if ours is still installed.
            if signal.getsignal(installed) is hook:
                signal.signal(installed, handler)
        cutter.close()
