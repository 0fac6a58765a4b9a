"""StreamGate: open streams counted for shutdown, model slots waited for with a bound."""

from __future__ import annotations

import asyncio

from app.chat.inflight import StreamGate


async def test_a_slot_is_waited_for_and_given_back_once() -> None:
    gate = StreamGate(1)
    first, second = gate.model_slot(5), gate.model_slot(5)
    assert await first.take()
    waiting = asyncio.create_task(second.take())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    first.release()
    first.release()  # a second release gives nothing more back
    assert await waiting
    third = gate.model_slot(0.05)
    assert not await third.take()  # the only slot is still held
    second.release()
    assert await gate.model_slot(0.05).take()


async def test_the_queue_is_full_only_when_no_slot_is_free() -> None:
    gate = StreamGate(1, max_waiting=2)
    holder = gate.model_slot(5)
    assert not gate.queue_full
    assert await holder.take()
    waiters = [asyncio.create_task(gate.model_slot(5).take()) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert gate.queue_full
    holder.release()
    await asyncio.sleep(0.01)
    assert not gate.queue_full
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_cancelled_wait_holds_nothing() -> None:
    gate = StreamGate(1)
    holder = gate.model_slot(5)
    assert await holder.take()
    cancelled = gate.model_slot(5)
    task = asyncio.create_task(cancelled.take())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    cancelled.release()  # never taken: nothing to give back
    holder.release()
    assert await gate.model_slot(0.05).take()


async def test_open_streams_are_waited_for_at_shutdown() -> None:
    gate = StreamGate(4)
    gate.open()
    gate.open()
    assert gate.count == 2
    assert not await gate.wait_idle(0.01)
    gate.close()
    gate.close()
    assert gate.count == 0
    assert await gate.wait_idle(0.01)
