"""The per-request context handed to the ChatKit server and the store."""

from __future__ import annotations

from dataclasses import dataclass, field


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
