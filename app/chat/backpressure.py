"""Backpressure from the HTTP client to the model stream, so a slow reader cannot grow memory.

The agents SDK hands model events to the turn through an unbounded queue. When the client reads
slowly, the answer's stream stops at the socket while the model keeps streaming into that
queue. A window of credits bounds it: the model wrapper takes one credit per event it passes
on, and the turn gives one back for each model event it has taken from the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from agents import RunResultStreaming
from agents.stream_events import RawResponsesStreamEvent, StreamEvent

DEFAULT_WINDOW_EVENTS = 256
_current: ContextVar[StreamWindow | None] = ContextVar("stream_window", default=None)


class StreamWindow:
    """At most `size` model events produced and not yet taken by the turn."""

    def __init__(self, size: int = DEFAULT_WINDOW_EVENTS) -> None:
        self._credits = asyncio.Semaphore(size)

    async def produced(self) -> None:
        await self._credits.acquire()

    def taken(self) -> None:
        self._credits.release()


async def wait_for_reader() -> None:
    """Called by the model wrapper before passing on each event (a no-op outside a turn)."""
    window = _current.get()
    if window is not None:
        await window.produced()


@contextmanager
def window_for_run(window: StreamWindow) -> Iterator[None]:
    """Runs started inside this block (their tasks copy the context) use `window`."""
    token = _current.set(window)
    try:
        yield
    finally:
        _current.reset(token)


class WindowedRun:
    """The part of a streamed run the ChatKit SDK reads, giving credits back as it reads."""

    def __init__(self, result: RunResultStreaming, window: StreamWindow) -> None:
        self._result = result
        self._window = window

    async def stream_events(self) -> AsyncIterator[StreamEvent]:
        async for event in self._result.stream_events():
            if isinstance(event, RawResponsesStreamEvent):
                self._window.taken()
            yield event
