"""Per-user usage counters in the database, so every server process sees the same limits.

A turn takes three things at once: its thread (one answer per thread), one of the user's stream
slots, and a count in the user's current minute. On Postgres that is one statement (and one
round trip); a refusal half-way takes one more to give back what was taken.

Stream slots are rows with fixed ids, `slot 1..limit` of the user: a new answer takes the first
slot that is free or whose lease lapsed. Two processes racing for the same slot cannot both get
it (the primary key decides); the loser looks again once, and is refused only if every slot is
really taken. A slot's `started_at` tells this holder from a later one.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Executable,
    Table,
    TextClause,
    bindparam,
    delete,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.store.database import autocommit, once_more_if_disconnected
from app.store.sql import insert_for, is_postgres, utcnow
from app.store.tables import StreamLeaseRow, ThreadTurnRow, UsageWindowRow

_windows: Table = UsageWindowRow.__table__  # type: ignore[attr-defined]
_leases: Table = StreamLeaseRow.__table__  # type: ignore[attr-defined]
_turns: Table = ThreadTurnRow.__table__  # type: ignore[attr-defined]

TURNS = "turns"
WINDOW_SECONDS = 60


class ThreadBusy(Exception):
    """The thread's previous answer is still running (in this process or another)."""


class LimitExceeded(Exception):
    """A usage limit is reached; `retry_after` says when trying again can succeed."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class TurnClaims:
    """What one admitted turn holds until it ends: its thread and, with a limit, a stream slot."""

    thread_id: str
    user_id: str
    thread_lease: str
    stream_slot: str | None
    # Written with the slot: tells this holder from a later one of the same slot.
    started_at: datetime


def slot_prefix(user_id: str) -> str:
    """The id prefix of a user's stream slots (fits the 64-character id column)."""
    return "slot:" + hashlib.sha256(user_id.encode()).hexdigest()[:40] + ":"


def _too_many_streams(limit: int, first_expiry: datetime | None, now: datetime) -> LimitExceeded:
    # A slot frees when a stream ends, or at the latest when its lease lapses.
    wait = (first_expiry - now).total_seconds() if first_expiry else 1.0
    return LimitExceeded(
        f"Too many answers in progress: at most {limit} at once.",
        retry_after=max(1, math.ceil(wait)),
    )


def _too_many_turns(limit: int, window_start: int, now: float) -> LimitExceeded:
    return LimitExceeded(
        f"Too many messages: at most {limit} per minute.",
        retry_after=max(1, math.ceil(window_start + WINDOW_SECONDS - now)),
    )


# The turn's claims as one statement. Each CTE runs only if the one before took its part (a
# data-modifying CTE sees the rows the previous one returned), so a busy thread takes no slot
# and a refused stream counts no turn. {slot} and {count} are left out when a limit is off.
_ADMIT_SQL = """
WITH claim AS (
    INSERT INTO thread_turns (thread_id, user_id, lease_id, expires_at)
    VALUES (:thread_id, :user_id, :thread_lease, :expires_at)
    ON CONFLICT (thread_id) DO UPDATE
        SET user_id = EXCLUDED.user_id,
            lease_id = EXCLUDED.lease_id,
            expires_at = EXCLUDED.expires_at
        -- only a claim whose holder stopped renewing it (a crashed process), or our own
        WHERE thread_turns.expires_at < :now OR thread_turns.lease_id = :thread_lease
    RETURNING lease_id
){slot}{count}
SELECT (SELECT lease_id FROM claim) AS thread_lease, {slot_result} AS slot, {count_result} AS turns
"""
_SLOT_SQL = """, slot AS (
    INSERT INTO stream_leases (id, user_id, started_at, expires_at)
    SELECT CAST(:slot_prefix AS VARCHAR) || CAST(n AS VARCHAR), :user_id, :now, :expires_at
    FROM generate_series(1, CAST(:stream_limit AS INTEGER)) AS n
    WHERE EXISTS (SELECT 1 FROM claim)
      AND NOT EXISTS (
        SELECT 1 FROM stream_leases AS held
        WHERE held.id = CAST(:slot_prefix AS VARCHAR) || CAST(n AS VARCHAR)
          AND held.expires_at >= :now
      )
    ORDER BY n
    LIMIT 1
    ON CONFLICT (id) DO UPDATE
        SET user_id = EXCLUDED.user_id,
            started_at = EXCLUDED.started_at,
            expires_at = EXCLUDED.expires_at
        WHERE stream_leases.expires_at < :now
    RETURNING id
)"""
_COUNT_SQL = """, counted AS (
    INSERT INTO usage_windows (user_id, kind, window_start, count)
    SELECT :user_id, 'turns', :window_start, 1
    WHERE EXISTS (SELECT 1 FROM {after})
    ON CONFLICT (user_id, kind, window_start) DO UPDATE SET count = usage_windows.count + 1
    RETURNING count
), forgotten AS (
    -- the first turn of a window forgets the user's older windows
    DELETE FROM usage_windows
    WHERE user_id = :user_id AND kind = 'turns' AND window_start < :window_start
      AND EXISTS (SELECT 1 FROM counted WHERE count = 1)
)"""
_RELEASE_SQL = text("""
WITH slot AS (
    DELETE FROM stream_leases WHERE id = :stream_slot AND started_at = :started_at
)
DELETE FROM thread_turns WHERE thread_id = :thread_id AND lease_id = :thread_lease
""")
_RENEW_SQL = text("""
WITH slot AS (
    UPDATE stream_leases SET expires_at = :expires_at
    WHERE id = :stream_slot AND started_at = :started_at
)
UPDATE thread_turns SET expires_at = :expires_at
WHERE thread_id = :thread_id AND lease_id = :thread_lease
""")
_RENEW_MANY_SQL = text("""
WITH held AS (
    SELECT * FROM unnest(
        CAST(:thread_ids AS VARCHAR[]),
        CAST(:thread_leases AS VARCHAR[]),
        CAST(:stream_slots AS VARCHAR[]),
        CAST(:started_ats AS TIMESTAMP[])
    ) AS held(thread_id, thread_lease, stream_slot, started_at)
), slots AS (
    UPDATE stream_leases SET expires_at = :expires_at
    FROM held
    WHERE stream_leases.id = held.stream_slot AND stream_leases.started_at = held.started_at
)
UPDATE thread_turns SET expires_at = :expires_at
FROM held
WHERE thread_turns.thread_id = held.thread_id AND thread_turns.lease_id = held.thread_lease
""")
_ACTIVE_SLOTS_SQL = text("""
SELECT count(*) AS active, min(expires_at) AS first_expiry FROM stream_leases
WHERE user_id = :user_id AND expires_at >= :now
""")


@functools.cache
def _admit_statement(*, streams: bool, turns: bool) -> TextClause:
    """The admission statement with the limits that are on (one of four, built once)."""
    count = _COUNT_SQL.format(after="slot" if streams else "claim") if turns else ""
    return text(
        _ADMIT_SQL.format(
            slot=_SLOT_SQL if streams else "",
            count=count,
            slot_result="(SELECT id FROM slot)" if streams else "NULL",
            count_result="(SELECT count FROM counted)" if turns else "NULL",
        )
    )


class UsageStore:
    """Turn claims, stream slots and per-minute counters: one statement per step on Postgres."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = is_postgres(engine)
        self._insert = insert_for(engine)
        # Single statements need no BEGIN/COMMIT around them.
        self._autocommit = autocommit(engine)
        self._counts = WindowCounts(engine)

    async def admit_turn(
        self,
        *,
        thread_id: str,
        user_id: str,
        lease_seconds: int,
        stream_limit: int,
        turns_limit: int,
    ) -> TurnClaims:
        """Claim the thread, take a stream slot, count the turn: all or nothing.

        Raises ThreadBusy while another answer holds the thread, LimitExceeded when the user's
        streams or this minute's turns are used up (a turn refused for its thread or its streams
        is not counted). Limits of 0 are off.
        """
        if not self._postgres:
            return await self._admit_in_steps(
                thread_id, user_id, lease_seconds, stream_limit, turns_limit
            )
        for attempt in (1, 2):
            claims, counted = await once_more_if_disconnected(
                lambda: self._admit_once(
                    thread_id, user_id, lease_seconds, stream_limit, turns_limit
                )
            )
            if claims is None:
                raise ThreadBusy(thread_id)
            if stream_limit and claims.stream_slot is None:
                # Every slot looked taken: give the thread back; a race lost to another
                # process for the same free slot is worth one more look.
                active, first_expiry = await self._give_back(claims)
                if active < stream_limit and attempt == 1:
                    continue
                raise _too_many_streams(stream_limit, first_expiry, utcnow())
            if turns_limit and counted is not None and counted > turns_limit:
                await self.release_turn(claims)
                now = time.time()
                raise _too_many_turns(turns_limit, _window_start(now), now)
            return claims
        raise AssertionError("unreachable")  # pragma: no cover

    async def _admit_once(
        self,
        thread_id: str,
        user_id: str,
        lease_seconds: int,
        stream_limit: int,
        turns_limit: int,
    ) -> tuple[TurnClaims | None, int | None]:
        now = utcnow()
        thread_lease = uuid.uuid4().hex
        parameters: dict[str, Any] = {
            "thread_id": thread_id,
            "user_id": user_id,
            "thread_lease": thread_lease,
            "now": now,
            "expires_at": now + timedelta(seconds=lease_seconds),
        }
        if stream_limit:
            parameters["slot_prefix"] = slot_prefix(user_id)
            parameters["stream_limit"] = stream_limit
        if turns_limit:
            parameters["window_start"] = _window_start(time.time())
        statement = _admit_statement(streams=bool(stream_limit), turns=bool(turns_limit))
        async with self._autocommit.begin() as conn:
            row = (await conn.execute(statement, parameters)).one()
        if row.thread_lease != thread_lease:
            return None, None
        claims = TurnClaims(thread_id, user_id, thread_lease, row.slot, now)
        return claims, row.turns

    async def _give_back(self, claims: TurnClaims) -> tuple[int, datetime | None]:
        """Release the thread of a turn refused for its streams; the user's active slots."""
        now = utcnow()
        async with self._autocommit.begin() as conn:
            await self._release(conn, claims)
            row = (
                await conn.execute(_ACTIVE_SLOTS_SQL, {"user_id": claims.user_id, "now": now})
            ).one()
        return int(row.active or 0), row.first_expiry

    async def release_turn(self, claims: TurnClaims) -> None:
        """Give the thread and the stream slot back (one statement)."""

        async def release() -> None:
            async with self._autocommit.begin() as conn:
                await self._release(conn, claims)

        await once_more_if_disconnected(release)

    async def _release(self, conn: AsyncConnection, claims: TurnClaims) -> None:
        if self._postgres:
            await conn.execute(
                _RELEASE_SQL,
                {
                    "stream_slot": claims.stream_slot,
                    "started_at": claims.started_at,
                    "thread_id": claims.thread_id,
                    "thread_lease": claims.thread_lease,
                },
            )
            return
        if claims.stream_slot is not None:
            await conn.execute(delete(_leases).where(_leases.c.id == claims.stream_slot))
        await conn.execute(
            delete(_turns).where(
                _turns.c.thread_id == claims.thread_id,
                _turns.c.lease_id == claims.thread_lease,
            )
        )

    async def renew_turns(self, live: list[TurnClaims], *, lease_seconds: int) -> None:
        """Push back the expiry of every claim in `live` (one statement on Postgres)."""
        if not self._postgres:
            for claims in live:
                await self.renew_turn(claims, lease_seconds=lease_seconds)
            return
        parameters = {
            "expires_at": utcnow() + timedelta(seconds=lease_seconds),
            "thread_ids": [claims.thread_id for claims in live],
            "thread_leases": [claims.thread_lease for claims in live],
            "stream_slots": [claims.stream_slot for claims in live],
            "started_ats": [claims.started_at for claims in live],
        }
        async with self._autocommit.begin() as conn:
            await conn.execute(_RENEW_MANY_SQL, parameters)

    async def renew_turn(self, claims: TurnClaims, *, lease_seconds: int) -> None:
        """Push back the expiry of a running answer's thread claim and stream slot."""
        expires_at = utcnow() + timedelta(seconds=lease_seconds)
        async with self._autocommit.begin() as conn:
            if self._postgres:
                await conn.execute(
                    _RENEW_SQL,
                    {
                        "expires_at": expires_at,
                        "stream_slot": claims.stream_slot,
                        "started_at": claims.started_at,
                        "thread_id": claims.thread_id,
                        "thread_lease": claims.thread_lease,
                    },
                )
                return
            if claims.stream_slot is not None:
                await conn.execute(
                    update(_leases)
                    .where(_leases.c.id == claims.stream_slot)
                    .values(expires_at=expires_at)
                )
            await conn.execute(
                update(_turns)
                .where(_turns.c.lease_id == claims.thread_lease)
                .values(expires_at=expires_at)
            )

    # SQLite: one writer at a time anyway; the same semantics in a few short transactions.

    async def _admit_in_steps(
        self,
        thread_id: str,
        user_id: str,
        lease_seconds: int,
        stream_limit: int,
        turns_limit: int,
    ) -> TurnClaims:
        now = utcnow()
        expires_at = now + timedelta(seconds=lease_seconds)
        thread_lease = uuid.uuid4().hex
        claim = self._insert(_turns).values(
            thread_id=thread_id, user_id=user_id, lease_id=thread_lease, expires_at=expires_at
        )
        claim = claim.on_conflict_do_update(
            index_elements=[_turns.c.thread_id],
            set_={
                "user_id": claim.excluded.user_id,
                "lease_id": claim.excluded.lease_id,
                "expires_at": claim.excluded.expires_at,
            },
            where=_turns.c.expires_at < now,
        ).returning(_turns.c.lease_id)
        async with self._engine.begin() as conn:
            holder = (await conn.execute(claim)).scalar_one_or_none()
        if holder != thread_lease:
            raise ThreadBusy(thread_id)
        claims = TurnClaims(thread_id, user_id, thread_lease, None, now)
        try:
            if stream_limit:
                slot = uuid.uuid4().hex
                await self._take_stream_in_steps(user_id, slot, stream_limit, now, expires_at)
                claims = TurnClaims(thread_id, user_id, thread_lease, slot, now)
            if turns_limit:
                await self._count_turn_in_steps(user_id, turns_limit)
        except LimitExceeded:
            await self.release_turn(claims)
            raise
        return claims

    async def _take_stream_in_steps(
        self, user_id: str, slot: str, limit: int, now: datetime, expires_at: datetime
    ) -> None:
        async with self._engine.begin() as conn:
            # The first write takes SQLite's write lock: the count-then-insert is serialised.
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
                raise _too_many_streams(limit, first_expiry, now)
            await conn.execute(
                _leases.insert().values(
                    id=slot, user_id=user_id, started_at=now, expires_at=expires_at
                )
            )

    async def _count_turn_in_steps(self, user_id: str, limit: int) -> None:
        now = time.time()
        window_start = _window_start(now)
        count = await self._counts.add_one(user_id=user_id, kind=TURNS, window_start=window_start)
        if count > limit:
            raise _too_many_turns(limit, window_start, now)


class WindowCounts:
    """Per-user counts in fixed windows (`usage_windows`), one kind of thing each.

    Counting is one statement on Postgres. The first count of a window forgets the user's
    older windows of that kind (in the same statement on Postgres, one more on SQLite).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._postgres = is_postgres(engine)
        self._autocommit = autocommit(engine)
        window = _windows.c
        counted = insert_for(engine)(_windows).values(
            user_id=bindparam("owner"),
            kind=bindparam("window_kind"),
            window_start=bindparam("start"),
            count=1,
        )
        # Postgres: the count and the forgetting of older windows in one statement.
        self._count: Any = counted.on_conflict_do_update(
            index_elements=[window.user_id, window.kind, window.window_start],
            set_={"count": window.count + 1},
        ).returning(window.count)
        older = (
            window.user_id == bindparam("owner"),
            window.kind == bindparam("window_kind"),
            window.window_start < bindparam("start"),
        )
        self._forget: Executable = delete(_windows).where(*older)
        if self._postgres:
            new_count = self._count.cte("counted")
            forgotten = (
                delete(_windows)
                .where(*older, exists().where(new_count.c.count == 1))
                .cte("forgotten")
            )
            self._count = select(new_count.c.count).add_cte(forgotten)

    async def add_one(self, *, user_id: str, kind: str, window_start: int) -> int:
        """Count one more in the user's window starting at `window_start`; the new count.

        A dropped connection gets one more try: at worst a call is counted twice.
        """
        values = {"owner": user_id, "window_kind": kind, "start": window_start}

        async def count() -> int:
            async with self._autocommit.begin() as conn:
                return int((await conn.execute(self._count, values)).scalar_one())

        counted = await once_more_if_disconnected(count)
        if counted == 1 and not self._postgres:
            async with self._autocommit.begin() as conn:
                await conn.execute(self._forget, values)
        return counted


def _window_start(now: float) -> int:
    return int(now // WINDOW_SECONDS) * WINDOW_SECONDS
