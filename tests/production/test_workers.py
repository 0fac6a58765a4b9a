"""WEB_CONCURRENCY=2: two worker processes behind one port share threads, tasks and limits; the
embedded MCP server answers tool calls in each; SIGTERM to the parent stops both.

The tests share one server (two workers take long to import on a busy machine); the last test
stops it. Which worker served a request is read from the JSON log (`pid`, `request_id`)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.harness import ChatKitClient, ServerProcess
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.production.workers import log_records, start_with_workers
from tests.server_fixtures import ClientFactory

TURNS_PER_MINUTE = 5
GRACE_SECONDS = 3
SLOW = "slow answer please"
SLOW_SECONDS = 20  # 400 deltas, 0.05 s apart: far longer than the grace


def _respond(request: RecordedRequest) -> Reply:
    if request.ends_with_tool_result:
        return Reply.text(f"tool said: {request.tool_result_text}")
    text = request.last_user_text or ""
    if text.startswith("add task "):
        return Reply.tool_call("add_task", {"title": text.removeprefix("add task ")})
    if text == "list tasks":
        return Reply.tool_call("list_tasks", {})
    if text == SLOW:
        return Reply.text("word " * 400, chunk_size=5, delay_between=SLOW_SECONDS / 400)
    return Reply.text(f"answer to {text}")


@pytest.fixture(scope="module")
def fake(fake: FakeLLM) -> FakeLLM:
    """This module's channel of the session's fake model, answering by `_respond`."""
    fake.responder = _respond
    return fake


@pytest.fixture(scope="module")
def workers(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, set[int]]]:
    server = ServerProcess(
        env={
            **server_env,
            "WEB_CONCURRENCY": "2",
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "test-key",
            "OPENAI_MAX_RETRIES": "0",
            "THREAD_TITLES": "first_words",
            "RATE_LIMIT_TURNS_PER_MINUTE": str(TURNS_PER_MINUTE),
            "RATE_LIMIT_CONCURRENT_STREAMS": "1",
            "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        },
        log_path=tmp_path_factory.mktemp("workers") / "server.log",
    )
    pids = start_with_workers(server, 2)
    yield server, pids
    server.stop()


def _tag(client: ChatKitClient) -> str:
    """Give the client's next requests an id of their own, to find them in the log."""
    request_id = f"w-{uuid.uuid4().hex[:16]}"
    client.http.headers["X-Request-ID"] = request_id
    return request_id


async def _pid_of(server: ServerProcess, request_id: str) -> int:
    """The worker that logged `chatkit.request` for this request id."""
    for _ in range(100):
        for record in log_records(server):
            if record.get("request_id") == request_id and record.get("event") == "chatkit.request":
                return int(record["pid"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no log line for request {request_id}")


async def test_both_workers_serve_tool_turns_on_shared_threads_and_tasks(
    workers: tuple[ServerProcess, set[int]], make_client: ClientFactory
) -> None:
    server, pids = workers
    tool_turns_by_pid: dict[int, int] = {}
    for attempt in range(40):
        user_id = f"user-{uuid.uuid4().hex}"
        # A fresh client is a fresh connection: the kernel hands it to either worker.
        adder = make_client(server.base_url, user_id)
        add_id = _tag(adder)
        added = await adder.send(f"add task t{attempt}")
        assert added.status == 200
        assert f"t{attempt}" in added.assistant_text(), added.raw  # the tool's answer
        lister = make_client(server.base_url, user_id)
        list_id = _tag(lister)
        listed = await lister.send("list tasks", added.thread_id)
        assert f"t{attempt}" in listed.assistant_text(), listed.raw  # the task, seen by either
        items = await make_client(server.base_url, user_id).call(
            "items.list", {"thread_id": added.thread_id, "limit": 20, "order": "asc"}
        )
        kinds = [item["type"] for item in items["data"] if item["type"].endswith("_message")]
        assert kinds == ["user_message", "assistant_message"] * 2  # one thread, both turns
        for request_id in (add_id, list_id):
            pid = await _pid_of(server, request_id)
            tool_turns_by_pid[pid] = tool_turns_by_pid.get(pid, 0) + 1
        if len(tool_turns_by_pid) == 2 and attempt >= 3:
            break
    assert set(tool_turns_by_pid) == pids, tool_turns_by_pid


async def test_turns_per_minute_hold_across_workers(
    workers: tuple[ServerProcess, set[int]], make_client: ClientFactory
) -> None:
    server, pids = workers
    user_id = f"user-{uuid.uuid4().hex}"
    statuses: list[int] = []
    served_by: set[int] = set()
    # Fresh connections land on either worker; go on until both have served some.
    for turn in range(4 * TURNS_PER_MINUTE):
        client = make_client(server.base_url, user_id)
        request_id = _tag(client)
        result = await client.send(f"turn {turn}")
        statuses.append(result.status)
        served_by.add(await _pid_of(server, request_id))
        if result.status == 429:
            assert result.raw[0]["type"] == "rate_limited"
        if turn >= TURNS_PER_MINUTE + 1 and served_by == pids:
            break
    assert served_by == pids, "every request landed on one worker"
    # One count for the user across both workers (a minute boundary may reset it once).
    assert statuses[:TURNS_PER_MINUTE].count(200) >= 2 and statuses.count(429) >= 1
    assert statuses.count(200) <= 2 * TURNS_PER_MINUTE


async def test_one_stream_at_a_time_across_workers(
    workers: tuple[ServerProcess, set[int]], fake: FakeLLM, make_client: ClientFactory
) -> None:
    server, _ = workers
    user_id = f"user-{uuid.uuid4().hex}"
    slow_client = make_client(server.base_url, user_id)
    slow_id = _tag(slow_client)
    slow = asyncio.create_task(slow_client.send(SLOW))
    slow_pid = await _pid_of(server, slow_id)
    refused_by_the_other_worker = False
    for _ in range(20):  # until a refusal comes from the worker that is not streaming
        client = make_client(server.base_url, user_id)
        request_id = _tag(client)
        refused = await client.send("meanwhile")
        assert not slow.done()
        assert refused.status == 429 and refused.raw[0]["type"] == "rate_limited"
        if await _pid_of(server, request_id) != slow_pid:
            refused_by_the_other_worker = True
            break
    finished = await slow
    assert finished.status == 200 and finished.assistant_text().startswith("word word")
    assert refused_by_the_other_worker


async def test_sigterm_to_the_parent_stops_both_workers_within_the_grace(
    workers: tuple[ServerProcess, set[int]], fake: FakeLLM, make_client: ClientFactory
) -> None:
    """Runs last: it stops the module's server."""
    server, pids = workers
    assert server.process is not None
    streams: list[asyncio.Task[object]] = []
    streaming_pids: set[int] = set()
    for _ in range(12):  # open slow answers until both workers are streaming one
        client = make_client(server.base_url)
        request_id = _tag(client)
        streams.append(asyncio.create_task(client.send(SLOW)))
        streaming_pids.add(await _pid_of(server, request_id))
        if streaming_pids == pids:
            break
    assert streaming_pids == pids
    await asyncio.sleep(0.5)
    stopped_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.process.wait, 60)
    elapsed = time.monotonic() - stopped_at
    assert code == 0
    # The grace, then up to a few seconds to save the cut answers and exit (a busy machine).
    assert elapsed < GRACE_SECONDS + 8, elapsed
    assert elapsed < SLOW_SECONDS - 5  # the streams did not run to their end
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    await asyncio.gather(*streams, return_exceptions=True)
    finished = [r for r in log_records(server) if r.get("event", "").startswith("Finished server")]
    assert {r["pid"] for r in finished} == pids
