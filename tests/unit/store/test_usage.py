"""UsageStore on SQLite through the app's engine: thread claims, stream slots, minute counts.

The one-statement Postgres path is covered against a real Postgres in tests/store/test_usage.py.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store import usage as usage_module
from app.store.usage import WINDOW_SECONDS, LimitExceeded, ThreadBusy, TurnClaims, UsageStore

# A fixed clock for the minute windows, 15 s into a window (so the window has 45 s left).
MINUTE_START = 60 * 29_000_000
NOW = MINUTE_START + 15.0


class Clock:
    """Stands in for the `time` module inside app.store.usage (it only reads `time()`)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(NOW)
    monkeypatch.setattr(usage_module, "time", SimpleNamespace(time=clock.time))
    return clock


@pytest.fixture
def usage(sqlite_engine: AsyncEngine) -> UsageStore:
    return UsageStore(sqlite_engine)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


async def admit(
    usage: UsageStore,
    user: str,
    thread: str | None = None,
    *,
    streams: int = 0,
    turns: int = 0,
    lease: int = 60,
) -> TurnClaims:
    return await usage.admit_turn(
        thread_id=thread or new_id("thr"),
        user_id=user,
        lease_seconds=lease,
        stream_limit=streams,
        turns_limit=turns,
    )


async def test_one_answer_per_thread_until_released(usage: UsageStore) -> None:
    user, thread = new_id("user"), new_id("thr")
    first = await admit(usage, user, thread)
    assert (first.thread_id, first.user_id) == (thread, user)

    with pytest.raises(ThreadBusy):
        await admit(usage, user, thread)
    # Another thread of the same user is not affected.
    await admit(usage, user)

    await usage.release_turn(first)
    again = await admit(usage, user, thread)
    assert again.thread_lease != first.thread_lease


async def test_a_lapsed_claim_is_taken_over_and_its_late_release_frees_nothing(
    usage: UsageStore,
) -> None:
    user, thread = new_id("user"), new_id("thr")
    crashed = await admit(usage, user, thread, lease=0)  # a holder that stopped renewing

    taker = await admit(usage, user, thread)
    assert taker.thread_lease != crashed.thread_lease

    # The first holder comes back and releases: the thread stays with the one holding it now.
    await usage.release_turn(crashed)
    with pytest.raises(ThreadBusy):
        await admit(usage, user, thread)
    await usage.release_turn(taker)
    await admit(usage, user, thread)


async def test_renewing_keeps_a_claim_from_lapsing(usage: UsageStore) -> None:
    user = new_id("user")
    # Leases of 0 s lapse at once unless renewed before anyone looks again.
    streaming = await admit(usage, user, lease=0, streams=1)
    await usage.renew_turn(streaming, lease_seconds=60)
    with pytest.raises(LimitExceeded):
        await admit(usage, user, streams=1)  # the renewed stream slot is still taken
    many = [await admit(usage, user, lease=0) for _ in range(2)]
    await usage.renew_turns(many, lease_seconds=60)

    for claims in [streaming, *many]:
        with pytest.raises(ThreadBusy):
            await admit(usage, user, claims.thread_id)


async def test_an_unrenewed_claim_lapses(usage: UsageStore) -> None:
    user = new_id("user")
    lapsed = await admit(usage, user, lease=0, streams=1)
    # Both its thread and its stream slot are free for the next turn.
    await admit(usage, user, lapsed.thread_id, streams=1)


async def test_stream_slots_are_limited_and_given_back(usage: UsageStore) -> None:
    user = new_id("user")
    held = [await admit(usage, user, streams=2) for _ in range(2)]
    assert all(claims.stream_slot is not None for claims in held)
    refused_thread = new_id("thr")

    with pytest.raises(LimitExceeded) as refused:
        await admit(usage, user, refused_thread, streams=2)

    assert "at most 2 at once" in str(refused.value)
    assert 1 <= refused.value.retry_after <= 60
    # The refused turn kept neither its thread nor a slot; another user has slots of their own.
    await admit(usage, new_id("user"), streams=2)
    await usage.release_turn(held[0])
    taken = await admit(usage, user, refused_thread, streams=2)
    assert taken.stream_slot is not None


async def test_turns_per_minute_count_only_admitted_turns(usage: UsageStore, clock: Clock) -> None:
    user = new_id("user")
    first = await admit(usage, user, streams=1, turns=2)
    with pytest.raises(LimitExceeded, match="answers in progress"):
        await admit(usage, user, streams=1, turns=2)  # refused for its stream: not counted
    await usage.release_turn(first)
    second = await admit(usage, user, streams=1, turns=2)
    await usage.release_turn(second)
    third_thread = new_id("thr")

    with pytest.raises(LimitExceeded) as refused:
        await admit(usage, user, third_thread, streams=1, turns=2)

    assert "at most 2 per minute" in str(refused.value)
    assert refused.value.retry_after == 45  # the rest of the current window
    # Refused for the count, the turn gave back its thread and its slot.
    await admit(usage, user, third_thread, streams=1)

    clock.now += WINDOW_SECONDS  # a new minute starts counting from zero
    await admit(usage, user, turns=2)


async def test_limits_of_zero_are_off(usage: UsageStore) -> None:
    user = new_id("user")
    held = [await admit(usage, user) for _ in range(12)]
    assert all(claims.stream_slot is None for claims in held)
    assert len({claims.thread_lease for claims in held}) == 12
