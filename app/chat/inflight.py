"""Counts answers being streamed, so shutdown can let their final saves finish."""

from __future__ import annotations

import asyncio


class InFlight:
    """How many streams are open; `wait_idle` returns when none are (or at the timeout)."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    def enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def leave(self) -> None:
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
