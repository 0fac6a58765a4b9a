"""A process's open streams, and the bounded number of them that run the model at once."""

from __future__ import annotations

import asyncio
import time

from app.context import TurnSlot
from app.observability.metrics import Metrics

# Turns that may wait for a model slot, per slot: beyond that a new turn is refused up front
# (503) instead of waiting in a queue it cannot get through in time.
QUEUE_PER_SLOT = 16


class StreamGate:
    """Counts this process's open streams (for shutdown) and hands out its model slots.

    At most `limit` turns run the model at once; later ones wait their turn, for a while. The
    wait happens inside the turn's stream, after the thread and the user's message went out,
    and no turn holds a database connection while it waits (store calls take one per
    statement). `wait_idle` lets shutdown finish the streams' saves.
    """

    def __init__(
        self, limit: int, *, metrics: Metrics | None = None, max_waiting: int | None = None
    ) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._max_waiting = max_waiting if max_waiting is not None else limit * QUEUE_PER_SLOT
        self._waiting = 0
        self._metrics = metrics
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        """Streams open now."""
        return self._count

    @property
    def queue_full(self) -> bool:
        """True when a new turn would have to wait behind `max_waiting` others."""
        return self._slots.locked() and self._waiting >= self._max_waiting

    def open(self) -> None:
        """A stream starts (released with `close`)."""
        if self._metrics is not None:
            self._metrics.streams_open.inc()
        self._count += 1
        self._idle.clear()

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.streams_open.dec()
        self._count -= 1
        if self._count <= 0:
            self._count = 0
            self._idle.set()

    def model_slot(self, wait_seconds: float) -> ModelSlot:
        """A turn's claim on a model slot, taken with `take()` and given back once."""
        return ModelSlot(self, wait_seconds)

    async def _take(self, wait_seconds: float) -> bool:
        started = time.perf_counter()
        self._waiting += 1
        try:
            async with asyncio.timeout(wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1
            if self._metrics is not None:
                self._metrics.queue_wait.observe(time.perf_counter() - started)
        return True

    def _give(self) -> None:
        self._slots.release()

    async def wait_idle(self, seconds: float) -> bool:
        """True when every stream has finished, False if `seconds` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True


class ModelSlot(TurnSlot):
    """One turn's model slot: `take()` waits for it (bounded), `release()` gives it back."""

    def __init__(self, gate: StreamGate, wait_seconds: float) -> None:
        self._gate = gate
        self._wait_seconds = wait_seconds
        self._held = False

    async def take(self) -> bool:
        """Wait up to the queue time; False when no slot came free."""
        if not self._held:
            self._held = await self._gate._take(self._wait_seconds)
        return self._held

    def release(self) -> None:
        """Give the slot back (only the first call after a `take` does anything)."""
        if self._held:
            self._held = False
            self._gate._give()
