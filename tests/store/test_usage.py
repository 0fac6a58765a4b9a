"""UsageStore.admit_turn: thread, stream slot and minute count taken together, on both databases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.tasks import CallQuota, TooManyCalls
from app.store.usage import LimitExceeded, ThreadBusy, UsageStore, WindowCounts


@pytest.fixture
def engine(store_engine: AsyncEngine) -> AsyncEngine:
    """The package's migrated Postgres and SQLite databases (tests/store/conftest.py)."""
    return store_engine


@pytest.fixture
def usage(engine: AsyncEngine) -> UsageStore:
    return UsageStore(engine)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def admit(
    usage: UsageStore, user: str, thread: str | None = None, *, streams: int = 2, turns: int = 5
) -> object:
    return await usage.admit_turn(
        thread_id=thread or new_id("thr"),
        user_id=user,
        lease_seconds=60,
        stream_limit=streams,
        turns_limit=turns,
    )


async def rows(engine: AsyncEngine, sql: str, **params: object) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql), params)).all()]


async def test_one_answer_per_thread_until_released(usage: UsageStore) -> None:
    user, thread = new_id("user"), new_id("thr")
    first = await usage.admit_turn(
        thread_id=thread, user_id=user, lease_seconds=60, stream_limit=2, turns_limit=5
    )
    with pytest.raises(ThreadBusy):
        await admit(usage, user, thread)
    await usage.release_turn(first)
    again = await admit(usage, user, thread)
    assert again is not None


async def test_stream_slots_are_counted_and_given_back(
    usage: UsageStore, engine: AsyncEngine
) -> None:
    user = new_id("user")
    held = [
        await usage.admit_turn(
            thread_id=new_id("thr"), user_id=user, lease_seconds=60, stream_limit=2, turns_limit=0
        )
        for _ in range(2)
    ]
    busy_thread = new_id("thr")
    with pytest.raises(LimitExceeded) as refused:
        await admit(usage, user, busy_thread, turns=0)
    assert "at most 2 at once" in str(refused.value)
    assert 1 <= refused.value.retry_after <= 60
    # The refused turn left its thread free and counted nothing.
    assert (
        await rows(engine, "SELECT * FROM thread_turns WHERE thread_id = :t", t=busy_thread) == []
    )
    await usage.release_turn(held[0])
    assert await admit(usage, user, busy_thread, turns=0) is not None
    # Another user's slots are their own.
    assert await admit(usage, new_id("user"), turns=0) is not None


async def test_a_lapsed_slot_is_taken_over(usage: UsageStore, engine: AsyncEngine) -> None:
    user = new_id("user")
    await usage.admit_turn(
        thread_id=new_id("thr"), user_id=user, lease_seconds=60, stream_limit=1, turns_limit=0
    )
    with pytest.raises(LimitExceeded):
        await admit(usage, user, streams=1, turns=0)
    async with engine.begin() as conn:  # the holder crashed and stopped renewing
        past = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
        await conn.execute(
            text("UPDATE stream_leases SET expires_at = :past WHERE user_id = :u"),
            {"past": past, "u": user},
        )
    assert await admit(usage, user, streams=1, turns=0) is not None


async def test_turns_per_minute_refused_turns_hold_nothing(
    usage: UsageStore, engine: AsyncEngine
) -> None:
    user = new_id("user")
    for _ in range(3):
        claims = await admit(usage, user, streams=5, turns=3)
        await usage.release_turn(claims)  # type: ignore[arg-type]
    thread = new_id("thr")
    with pytest.raises(LimitExceeded) as refused:
        await admit(usage, user, thread, streams=5, turns=3)
    assert "at most 3 per minute" in str(refused.value)
    assert 1 <= refused.value.retry_after <= 60
    assert await rows(engine, "SELECT * FROM thread_turns WHERE thread_id = :t", t=thread) == []
    assert await rows(engine, "SELECT * FROM stream_leases WHERE user_id = :u", u=user) == []


async def test_a_busy_thread_is_not_counted(usage: UsageStore, engine: AsyncEngine) -> None:
    user, thread = new_id("user"), new_id("thr")
    await admit(usage, user, thread, turns=5)
    for _ in range(3):
        with pytest.raises(ThreadBusy):
            await admit(usage, user, thread, turns=5)
    counts = await rows(engine, "SELECT count FROM usage_windows WHERE user_id = :u", u=user)
    assert counts == [(1,)]
    leases = await rows(engine, "SELECT id FROM stream_leases WHERE user_id = :u", u=user)
    assert len(leases) == 1


async def test_renew_pushes_the_expiry_back(usage: UsageStore, engine: AsyncEngine) -> None:
    user = new_id("user")
    claims = await usage.admit_turn(
        thread_id=new_id("thr"), user_id=user, lease_seconds=10, stream_limit=1, turns_limit=0
    )
    before = await rows(engine, "SELECT expires_at FROM stream_leases WHERE user_id = :u", u=user)
    await usage.renew_turn(claims, lease_seconds=600)
    after = await rows(engine, "SELECT expires_at FROM stream_leases WHERE user_id = :u", u=user)
    turns = await rows(
        engine, "SELECT expires_at FROM thread_turns WHERE thread_id = :t", t=claims.thread_id
    )
    assert as_time(after[0][0]) > as_time(before[0][0]) + timedelta(seconds=500)
    assert as_time(turns[0][0]) == as_time(after[0][0])


def as_time(value: object) -> datetime:
    """A timestamp column read with raw SQL: a datetime on Postgres, text on SQLite."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


async def test_concurrent_admissions_never_exceed_the_stream_limit(
    usage: UsageStore, engine: AsyncEngine
) -> None:
    user, limit = new_id("user"), 3

    async def one() -> bool:
        try:
            await admit(usage, user, streams=limit, turns=0)
        except LimitExceeded:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(12)))
    assert sum(results) == limit
    active = await rows(engine, "SELECT id FROM stream_leases WHERE user_id = :u", u=user)
    assert len(active) == limit


async def test_running_turns_are_renewed_together(usage: UsageStore, engine: AsyncEngine) -> None:
    users = [new_id("user") for _ in range(3)]
    live = [
        await usage.admit_turn(
            thread_id=new_id("thr"),
            user_id=user,
            lease_seconds=10,
            stream_limit=1 if index else 0,  # one without a stream slot
            turns_limit=0,
        )
        for index, user in enumerate(users)
    ]
    await usage.renew_turns(live, lease_seconds=600)
    horizon = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=500)
    for claims in live:
        (turn,) = await rows(
            engine, "SELECT expires_at FROM thread_turns WHERE thread_id = :t", t=claims.thread_id
        )
        assert as_time(turn[0]) > horizon
        if claims.stream_slot is not None:
            (slot,) = await rows(
                engine, "SELECT expires_at FROM stream_leases WHERE id = :s", s=claims.stream_slot
            )
            assert as_time(slot[0]) > horizon


async def test_window_counts_count_per_user_and_kind_and_forget_older_windows(
    engine: AsyncEngine,
) -> None:
    counts = WindowCounts(engine)
    user, other = new_id("user"), new_id("user")
    firsts = [await counts.add_one(user_id=user, kind="k", window_start=60) for _ in range(3)]
    assert firsts == [1, 2, 3]
    assert await counts.add_one(user_id=user, kind="other", window_start=60) == 1
    assert await counts.add_one(user_id=other, kind="k", window_start=60) == 1
    # The first count of a later window forgets the user's older windows of that kind only.
    assert await counts.add_one(user_id=user, kind="k", window_start=120) == 1
    kept = await rows(
        engine,
        "SELECT kind, window_start, count FROM usage_windows WHERE user_id = :u"
        " ORDER BY kind, window_start",
        u=user,
    )
    assert kept == [("k", 120, 1), ("other", 60, 1)]
    others = await rows(engine, "SELECT count FROM usage_windows WHERE user_id = :u", u=other)
    assert others == [(1,)]


async def test_call_quota_refuses_calls_beyond_its_limit(engine: AsyncEngine) -> None:
    quota = CallQuota(engine, limit=3, window_seconds=3600)
    user = new_id("user")
    for _ in range(3):
        await quota.spend(user)
    with pytest.raises(TooManyCalls) as refused:
        await quota.spend(user)
    assert refused.value.limit == 3
    assert 1 <= refused.value.retry_after <= 3600
    await CallQuota(engine, limit=0).spend(user)  # off: counts nothing
    counts = await rows(engine, "SELECT count FROM usage_windows WHERE user_id = :u", u=user)
    assert counts == [(4,)]
