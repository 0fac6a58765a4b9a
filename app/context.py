"""The per-request context handed to the ChatKit server and the store."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class TurnEnd:
    """What a turn leaves running, closed when its stream ends for any reason.

    The SDK stops reading the answer when saving an item fails but leaves the answer's
    generator open, and with it the agent run: its next tool call would still go out.
    """

    __slots__ = ("_closers",)  # one per open stream: no instance dict

    def __init__(self) -> None:
        self._closers: list[Callable[[], Awaitable[object]]] = []

    def on_end(self, closer: Callable[[], Awaitable[object]]) -> None:
        self._closers.append(closer)

    async def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                await closer()
            except Exception as exc:
                logger.warning("turn.close_failed", extra={"error": type(exc).__name__})


class RecentItems:
    """A turn's newest items of its thread, as last read: the store answers repeat reads of them
    from here (the SDK reads the last two right after the turn read its history) and forgets
    them on any write to the thread through the same context."""

    __slots__ = ("complete", "items", "thread_id")  # one per open stream: no instance dict

    def __init__(self) -> None:
        self.thread_id: str | None = None
        self.items: list[Any] = []  # newest first
        self.complete = False  # no older items than these

    def remember(self, thread_id: str, items: list[Any], *, complete: bool) -> None:
        self.thread_id, self.items, self.complete = thread_id, list(items), complete

    def newest(self, thread_id: str, limit: int) -> list[Any] | None:
        """The `limit` newest items, when they are known; None when the store must read."""
        if self.thread_id != thread_id or (len(self.items) < limit and not self.complete):
            return None
        return self.items[:limit]

    def forget(self) -> None:
        self.thread_id, self.items, self.complete = None, [], False


class TurnSlot:
    """A turn's place among the answers a process runs at once (see app/chat/inflight.py).

    A class rather than a Protocol: the agents SDK's context model validates this dataclass.
    """

    async def take(self) -> bool:
        """Wait for the slot (bounded); False when none came free in time."""
        raise NotImplementedError

    def release(self) -> None:
        """Give the slot back; only the first call after a successful `take` counts."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is calling: the verified user id, their raw bearer token, and a request id."""

    user_id: str
    token: str = field(repr=False)
    request_id: str
    # The token's `exp` (seconds since the epoch), when it has one.
    expires_at: float | None = None
    # Set by admission for threads.create: the id the new thread gets (claimed beforehand).
    new_thread_id: str | None = None
    # This server's URL as the client reaches it (PUBLIC_URL, else the request's), for links
    # the client follows: attachment upload routes and image previews.
    base_url: str | None = None
    # Set by admission for turns: closed when the turn's stream ends.
    turn_end: TurnEnd | None = field(default=None, compare=False, repr=False)
    # Set by admission for turns: reads of the thread's newest items the store may repeat.
    recent_items: RecentItems | None = field(default=None, compare=False, repr=False)
    # Set by admission for turns: the model slot the answer waits for once its stream is open.
    model_slot: TurnSlot | None = field(default=None, compare=False, repr=False)
    # The token's `name` claim (a display name; cleaned again before any prompt) and the
    # request's Accept-Language header, for the agent's per-request instructions.
    display_name: str | None = field(default=None, repr=False)
    accept_language: str | None = None
