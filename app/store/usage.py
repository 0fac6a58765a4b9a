"""Per-user usage counters in the database, so every server process sees the same limits."""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.tables import StreamLeaseRow, ThreadTurnRow, UsageWindowRow

_windows: Table = UsageWindowRow.__table__  # type: ignore[attr-defined]
_leases: Table = StreamLeaseRow.__table__  # type: ignore[attr-defined]
_turns: Table = ThreadTurnRow.__table__  # type: ignore[attr-defined]


class ThreadBusy(Exception):
    """The thread's previous answer is still running (in this process or another)."""


class LimitExceeded(Exception):
    """A usage limit is reached; `retry_after` says when trying again can succeed."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class UsageStore:
    """Fixed-window turn counters and expiring stream leases, one short transaction each."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = (postgresql if self._postgres else sqlite).insert

    async def count_turn(self, user_id: str, *, limit: int, window_seconds: int = 60) -> None:
        """Count one turn; raise LimitExceeded when this window already holds `limit` turns."""
        now = time.time()
        window_start = int(now // window_seconds) * window_seconds
        statement = self._insert(_windows).values(
            user_id=user_id, kind="turns", window_start=window_start, count=1
        )
        statement = statement.on_conflict_do_update(
            index_elements=[_windows.c.user_id, _windows.c.kind, _windows.c.window_start],
            set_={"count": _windows.c.count + 1},
        ).returning(_windows.c.count)
        async with self._engine.begin() as conn:
            count = int((await conn.execute(statement)).scalar_one())
            if count == 1:  # first turn of a window: forget the user's old windows
                await conn.execute(
                    delete(_windows).where(
                        _windows.c.user_id == user_id, _windows.c.window_start < window_start
                    )
                )
        if count > limit:
            retry_after = math.ceil(window_start + window_seconds - now)
            raise LimitExceeded(
                f"Too many messages: at most {limit} per minute.", retry_after=retry_after
            )

    async def acquire_stream(self, user_id: str, *, limit: int, lease_seconds: int) -> str:
        """Take one of the user's `limit` stream slots; returns the lease id to release."""
        now = _now()
        lease_id = uuid.uuid4().hex
        async with self._engine.begin() as conn:
            if self._postgres:
                # Serialise the count-then-insert of one user across processes.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:user_id))"), {"user_id": user_id}
                )
            # On SQLite this first write takes the database's write lock: same effect.
            await conn.execute(
                delete(_leases).where(_leases.c.user_id == user_id, _leases.c.expires_at < now)
            )
            active, first_expiry = (
                await conn.execute(
                    select(func.count(), func.min(_leases.c.expires_at)).where(
                        _leases.c.user_id == user_id
                    )
                )
            ).one()
            if int(active or 0) >= limit:
                # A slot frees when a stream ends, or at the latest when its lease lapses.
                wait = (first_expiry - now).total_seconds() if first_expiry else 1.0
                raise LimitExceeded(
                    f"Too many answers in progress: at most {limit} at once.",
                    retry_after=max(1, math.ceil(wait)),
                )
            await conn.execute(
                _leases.insert().values(
                    id=lease_id,
                    user_id=user_id,
                    started_at=now,
                    expires_at=now + timedelta(seconds=lease_seconds),
                )
            )
        return lease_id

    async def release_stream(self, lease_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(_leases).where(_leases.c.id == lease_id))

    async def claim_thread(self, thread_id: str, user_id: str, *, lease_seconds: int) -> str:
        """Mark the thread as answering; raise ThreadBusy while another answer holds it."""
        now = _now()
        lease_id = uuid.uuid4().hex
        statement = self._insert(_turns).values(
            thread_id=thread_id,
            user_id=user_id,
            lease_id=lease_id,
            expires_at=now + timedelta(seconds=lease_seconds),
        )
        # Take over only a claim whose holder stopped renewing it (a crashed process).
        statement = statement.on_conflict_do_update(
            index_elements=[_turns.c.thread_id],
            set_={
                "user_id": statement.excluded.user_id,
                "lease_id": statement.excluded.lease_id,
                "expires_at": statement.excluded.expires_at,
            },
            where=_turns.c.expires_at < now,
        ).returning(_turns.c.lease_id)
        async with self._engine.begin() as conn:
            holder = (await conn.execute(statement)).scalar_one_or_none()
        if holder != lease_id:
            raise ThreadBusy(thread_id)
        return lease_id

    async def release_thread(self, thread_id: str, lease_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(_turns).where(_turns.c.thread_id == thread_id, _turns.c.lease_id == lease_id)
            )

    async def renew(
        self, *, stream_lease: str | None, thread_lease: str | None, lease_seconds: int
    ) -> None:
        """Push back the expiry of a running answer's stream slot and thread claim."""
        expires_at = _now() + timedelta(seconds=lease_seconds)
        async with self._engine.begin() as conn:
            if stream_lease is not None:
                await conn.execute(
                    update(_leases)
                    .where(_leases.c.id == stream_lease)
                    .values(expires_at=expires_at)
                )
            if thread_lease is not None:
                await conn.execute(
                    update(_turns)
                    .where(_turns.c.lease_id == thread_lease)
                    .values(expires_at=expires_at)
                )
