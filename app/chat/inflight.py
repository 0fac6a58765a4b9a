"""Admits a bounded number of streamed answers per process, and counts them for shutdown."""

from __future__ import annotations

import asyncio
import time

from app.observability.metrics import Metrics


class StreamGate:
    """At most `limit` answers stream at once here; later ones wait their turn for a while.

    Queueing a burst in front of the turn beats letting every turn in and then failing halfway
    when the database pool or the CPU runs out. `wait_idle` lets shutdown finish their saves.
    """

    def __init__(self, limit: int, *, metrics: Metrics | None = None) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._metrics = metrics
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    async def enter(self, wait_seconds: float) -> bool:
        """Take a slot, waiting up to `wait_seconds`; False when none came free in time."""
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._slots.acquire(), wait_seconds)
        except TimeoutError:
            return False
        finally:
            if self._metrics is not None:
                self._metrics.queue_wait.observe(time.perf_counter() - started)
        if self._metrics is not None:
            self._metrics.streams_open.inc()
        self._count += 1
        self._idle.clear()
        return True

    def leave(self) -> None:
        self._slots.release()
        if self._metrics is not None:
            self._metrics.streams_open.dec()
        self._count -= 1
        if self._count <= 0:
            self._count = 0
            self._idle.set()

    async def wait_idle(self, seconds: float) -> bool:
        """True when every stream has finished, False if `seconds` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True
