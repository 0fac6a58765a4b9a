"""Several server processes on one Postgres: shared threads and shared per-user limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.harness import InProcessServer, ServerProcess
from tests.fake_llm import FakeLLM, Reply
from tests.server_fixtures import ClientFactory

TURNS_PER_MINUTE = 4


@pytest.fixture(scope="module")
def two_servers(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, InProcessServer]]:
    """A server process and a server in this test process: two processes sharing nothing but
    one Postgres (and one process start paid instead of two)."""
    env = {
        **server_env,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "RATE_LIMIT_TURNS_PER_MINUTE": str(TURNS_PER_MINUTE),
        "RATE_LIMIT_CONCURRENT_STREAMS": "1",
        "THREAD_TITLES": "first_words",
    }
    logs = tmp_path_factory.mktemp("multi")
    servers = (
        ServerProcess(env=env, log_path=logs / "a.log"),
        InProcessServer(env=env, log_path=logs / "b.log"),
    )
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(autouse=True)
def default_answer(fake: FakeLLM) -> None:
    fake.reset()
    fake.responder = lambda request: Reply.text(f"answer to {request.last_user_text}")


async def test_a_thread_started_on_one_process_continues_on_the_other(
    two_servers: tuple[ServerProcess, InProcessServer], make_client: ClientFactory
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    first, second = (make_client(s.base_url, user_id) for s in two_servers)
    thread_id = (await first.send("one")).thread_id
    reply = await second.send("two", thread_id)
    assert reply.assistant_text() == "answer to two"
    items = await first.call("items.list", {"thread_id": thread_id, "limit": 10, "order": "asc"})
    assert [i["type"] for i in items["data"]] == ["user_message", "assistant_message"] * 2


async def test_turns_per_minute_hold_across_processes(
    two_servers: tuple[ServerProcess, InProcessServer], make_client: ClientFactory
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    clients = [make_client(s.base_url, user_id) for s in two_servers]
    statuses = []
    for turn in range(TURNS_PER_MINUTE + 2):
        result = await clients[turn % 2].send(f"turn {turn}")
        statuses.append(result.status)
        if result.status == 429:
            assert int(result.headers["retry-after"]) >= 1
            assert result.raw[0]["type"] == "rate_limited"
            assert result.raw[0]["status_code"] == 429
    # A minute boundary can fall inside the loop and reset the window once.
    assert statuses.count(429) >= 1 and statuses[:TURNS_PER_MINUTE].count(200) >= 2
    # Another user is not affected, and reads are never limited.
    assert (await make_client(two_servers[1].base_url).send("hi")).status == 200
    assert (await clients[0].request("threads.list", {})).status_code == 200


async def test_concurrent_streams_hold_across_processes(
    two_servers: tuple[ServerProcess, InProcessServer], fake: FakeLLM, make_client: ClientFactory
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    slow_client, other_client = (make_client(s.base_url, user_id) for s in two_servers)
    fake.enqueue(Reply.text("a slow answer in many small pieces", chunk_size=2, delay_between=0.1))
    slow = asyncio.create_task(slow_client.send("slow"))
    await fake.wait_for_requests(1, timeout=10)
    refused = await other_client.send("while the first one streams")
    assert refused.status == 429 and refused.raw[0]["type"] == "rate_limited"
    assert refused.headers["retry-after"]
    finished = await slow
    assert finished.assistant_text() == "a slow answer in many small pieces"
    # The slot is released when the stream ends: the same user can go on at once.
    again = await other_client.send("after it ended")
    assert again.status == 200 and again.assistant_text() == "answer to after it ended"
