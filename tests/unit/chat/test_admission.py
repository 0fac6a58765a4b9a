"""Admission: a turn holds its thread (and a stream slot) until its answer ends, released once.

A real UsageStore and SqlStore over SQLite and a real StreamGate; the Postgres statement is
covered in tests/store/test_usage.py and end to end in tests/e2e/test_turn_admission.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from chatkit.types import ChatKitReq, ThreadMetadata
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine

from app.chat.admission import Admission, AdmissionPolicy
from app.chat.inflight import StreamGate
from app.context import RequestContext
from app.errors import (
    AuthenticationError,
    RateLimitedError,
    ServerBusyError,
    ThreadBusyError,
)
from app.store.chatkit_store import SqlStore, new_id
from app.store.usage import ThreadBusy, TurnClaims, UsageStore

_requests: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)
POLICY = AdmissionPolicy(
    max_message_chars=1000,
    turns_per_minute=0,
    concurrent_streams=2,
    lease_seconds=60,
    queue_seconds=1.0,
)


def request(op: str, /, **params: Any) -> ChatKitReq:
    return _requests.validate_python({"type": op, "params": params})


def user_message(thread_id: str) -> ChatKitReq:
    return request(
        "threads.add_user_message",
        thread_id=thread_id,
        input={
            "content": [{"type": "input_text", "text": "hi"}],
            "attachments": [],
            "inference_options": {},
        },
    )


def new_thread() -> ChatKitReq:
    return request(
        "threads.create",
        input={
            "content": [{"type": "input_text", "text": "hi"}],
            "attachments": [],
            "inference_options": {},
        },
    )


class FlakyRelease(UsageStore):
    """The real UsageStore whose first `failures` releases fail (a database hiccup)."""

    def __init__(self, engine: AsyncEngine, failures: int) -> None:
        super().__init__(engine)
        self.failures = failures

    async def release_turn(self, claims: TurnClaims) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("database went away")
        await super().release_turn(claims)


class Setup:
    """One admission over the module's SQLite database, for one user of its own."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: AdmissionPolicy = POLICY,
        usage: UsageStore | None = None,
        gate: StreamGate | None = None,
    ) -> None:
        self.store = SqlStore(engine)
        self.gate = gate or StreamGate(4)
        self.usage = usage or UsageStore(engine)
        self.admission = Admission(
            store=self.store, usage=self.usage, gate=self.gate, policy=policy
        )
        self.caller = RequestContext(
            user_id=f"user-{uuid.uuid4().hex}", token="token", request_id="req"
        )

    async def thread(self) -> str:
        thread = ThreadMetadata(id=new_id("thr"), created_at=datetime.now())
        await self.store.save_thread(thread, self.caller)
        return thread.id

    async def is_busy(self, thread_id: str) -> bool:
        try:
            async with self.admission.admit(user_message(thread_id), self.caller):
                return False
        except ThreadBusyError:
            return True

    async def is_claimed(self, thread_id: str) -> bool:
        """Whether the thread is claimed, asked of the usage store (the thread may not exist)."""
        try:
            claims = await self.usage.admit_turn(
                thread_id=thread_id,
                user_id=self.caller.user_id,
                lease_seconds=60,
                stream_limit=0,
                turns_limit=0,
            )
        except ThreadBusy:
            return True
        await self.usage.release_turn(claims)
        return False


@pytest.fixture
async def setup(sqlite_engine: AsyncEngine) -> AsyncIterator[Setup]:
    setup = Setup(sqlite_engine)
    yield setup
    await setup.admission.aclose()


async def test_a_turn_holds_its_thread_until_admission_ends(setup: Setup) -> None:
    thread = await setup.thread()
    async with setup.admission.admit(user_message(thread), setup.caller):
        with pytest.raises(ThreadBusyError) as refused:
            async with setup.admission.admit(user_message(thread), setup.caller):
                pass
        assert refused.value.status_code == 409
        # Reading the thread is not a turn: it is not held up.
        async with setup.admission.admit(request("items.list", thread_id=thread), setup.caller):
            pass
    assert not await setup.is_busy(thread)


async def test_a_handed_over_ticket_holds_until_the_stream_closes_it(setup: Setup) -> None:
    thread = await setup.thread()
    async with setup.admission.admit(user_message(thread), setup.caller) as ticket:
        held = ticket.hand_over()
    assert setup.gate.count == 1  # the stream is still open
    assert await setup.is_busy(thread)

    await held.aclose()

    assert setup.gate.count == 0
    assert not await setup.is_busy(thread)


async def test_a_failure_inside_admission_gives_everything_back(setup: Setup) -> None:
    thread = await setup.thread()
    with pytest.raises(RuntimeError):
        async with setup.admission.admit(user_message(thread), setup.caller) as ticket:
            slot = ticket.context.model_slot
            assert slot is not None and await slot.take()
            raise RuntimeError("the route failed")
    assert setup.gate.count == 0
    assert not await setup.is_busy(thread)
    # The model slot came back too: every one of the gate's 4 can be taken again.
    slots = [setup.gate.model_slot(0.01) for _ in range(4)]
    assert [await slot.take() for slot in slots] == [True] * 4
    for slot in slots:
        slot.release()


async def test_a_new_thread_is_claimed_before_it_exists(setup: Setup) -> None:
    async with setup.admission.admit(new_thread(), setup.caller) as ticket:
        context = ticket.context
        assert context.new_thread_id is not None
        # The store gives the new thread exactly the claimed id.
        assert setup.store.generate_thread_id(context) == context.new_thread_id
        assert await setup.is_claimed(context.new_thread_id)
        assert context.turn_end is not None and context.recent_items is not None
        assert context.model_slot is not None
        # A second new thread meanwhile is a thread of its own, not busy with the first.
        async with setup.admission.admit(new_thread(), setup.caller) as other:
            assert other.context.new_thread_id not in (None, context.new_thread_id)
    assert not await setup.is_claimed(context.new_thread_id)


async def test_requests_that_are_not_turns_claim_nothing(setup: Setup) -> None:
    thread = await setup.thread()
    async with setup.admission.admit(
        request("threads.get_by_id", thread_id=thread), setup.caller
    ) as ticket:
        assert ticket.context == setup.caller
        assert ticket.context.turn_end is None and ticket.context.model_slot is None
        assert setup.gate.count == 0  # not a stream
        assert not await setup.is_busy(thread)


async def test_an_expired_token_runs_no_turn_but_may_still_read(setup: Setup) -> None:
    thread = await setup.thread()
    expired = RequestContext(
        user_id=setup.caller.user_id, token="token", request_id="r", expires_at=time.time() - 1
    )
    with pytest.raises(AuthenticationError) as refused:
        async with setup.admission.admit(user_message(thread), expired):
            pass
    assert refused.value.reason == "expired"
    assert not await setup.is_busy(thread)
    async with setup.admission.admit(request("items.list", thread_id=thread), expired):
        pass


async def test_too_many_answers_at_once_is_a_429_with_retry_after(setup: Setup) -> None:
    threads = [await setup.thread() for _ in range(3)]
    async with (
        setup.admission.admit(user_message(threads[0]), setup.caller),
        setup.admission.admit(user_message(threads[1]), setup.caller),
    ):
        with pytest.raises(RateLimitedError) as refused:
            async with setup.admission.admit(user_message(threads[2]), setup.caller):
                pass
    assert refused.value.status_code == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= POLICY.lease_seconds
    # The refused turn left its thread free.
    assert not await setup.is_busy(threads[2])


async def test_a_full_queue_refuses_a_turn_before_claiming_anything(
    sqlite_engine: AsyncEngine,
) -> None:
    gate = StreamGate(1, max_waiting=0)
    setup = Setup(sqlite_engine, gate=gate)
    thread = await setup.thread()
    running = gate.model_slot(1.0)
    assert await running.take()
    try:
        with pytest.raises(ServerBusyError) as refused:
            async with setup.admission.admit(user_message(thread), setup.caller):
                pass
        assert refused.value.status_code == 503 and "Retry-After" in refused.value.headers
        assert gate.count == 0
    finally:
        running.release()
    assert not await setup.is_busy(thread)
    await setup.admission.aclose()


async def test_a_failed_release_is_retried_until_the_thread_is_free(
    sqlite_engine: AsyncEngine,
) -> None:
    usage = FlakyRelease(sqlite_engine, failures=1)
    setup = Setup(sqlite_engine, usage=usage)
    thread = await setup.thread()
    async with setup.admission.admit(user_message(thread), setup.caller):
        pass
    assert usage.failures == 0  # the one release tried so far failed

    deadline = time.monotonic() + 5
    # Only a retry in the background can free the thread now.
    while await setup.is_busy(thread):
        assert time.monotonic() < deadline, "the failed release was never retried"
        await asyncio.sleep(0.1)
    await setup.admission.aclose()
