"""The database going away and coming back; graceful shutdown with answers in flight."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx2
import pytest

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import (
    ChatKitClient,
    InProcessServer,
    ServerProcess,
    sse_frames,
    text_input,
)
from tests.fake_llm import FakeLLM, Reply
from tests.pg_cluster import PostgresCluster, start_cluster
from tests.server_fixtures import ClientFactory


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this module's own: the tests stop and start it."""
    cluster = start_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
async def own_database(own_cluster: PostgresCluster) -> str:
    admin = await asyncpg.connect(own_cluster.url("postgres").replace("+asyncpg", ""))
    await admin.execute("CREATE DATABASE faults")
    await admin.close()
    return own_cluster.url("faults")


def env_for(
    server_env: dict[str, str], database_url: str, fake: FakeLLM, **extra: str
) -> dict[str, str]:
    return {
        **server_env,
        "DATABASE_URL": database_url,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "THREAD_TITLES": "first_words",
        **extra,
    }


@pytest.fixture
async def db_server(
    server_env: dict[str, str], own_database: str, fake: FakeLLM, tmp_path: Path
) -> AsyncIterator[InProcessServer]:
    server = InProcessServer(
        env=env_for(server_env, own_database, fake), log_path=tmp_path / "s.log"
    )
    server.start()
    yield server
    server.stop()


async def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


async def test_database_outage_gives_503_and_recovers_by_itself(
    db_server: InProcessServer,
    own_cluster: PostgresCluster,
    fake: FakeLLM,
    make_client: ClientFactory,
) -> None:
    fake.reset()
    fake.responder = lambda request: Reply.text(f"answer to {request.last_user_text}")
    client = make_client(db_server.base_url)
    thread_id = (await client.send("before the outage")).thread_id
    http = client.http
    own_cluster.stop()
    try:
        ready = await http.get("/ready")
        assert ready.status_code == 503
        assert (await http.get("/health")).status_code == 200
        listed = await client.request("threads.list", {})
        assert listed.status_code == 503 and listed.json()["type"] == "service_unavailable"
        for attempt in (client.send("during the outage"), client.send("again", thread_id)):
            result = await attempt
            if result.status == 200:
                errors = result.of_type("error")
                assert errors and "database" in (errors[0].message or "")
            else:
                assert result.status == 503 and result.raw[0]["status_code"] == 503
    finally:
        own_cluster.start()

    async def ready_again() -> bool:
        return (await http.get("/ready")).status_code == 200

    await wait_until(ready_again)
    again = await client.send("after the outage", thread_id)
    assert again.status == 200 and again.assistant_text() == "answer to after the outage"
    items = await client.call("items.list", {"thread_id": thread_id, "order": "asc"})
    texts = [i["content"][0]["text"] for i in items["data"] if i["type"] == "user_message"]
    assert texts[0] == "before the outage" and texts[-1] == "after the outage"


async def test_an_outage_during_streams_does_not_lock_the_user_out(
    db_server: InProcessServer,
    own_cluster: PostgresCluster,
    fake: FakeLLM,
    make_client: ClientFactory,
) -> None:
    """Three answers end while the database is away: the user can go on soon after it is back,
    long before the leases of their stream slots could have lapsed by themselves."""
    fake.reset()
    fake.responder = lambda request: Reply.text(f"answer to {request.last_user_text}")
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(db_server.base_url, user_id)
    assert db_server.settings is not None
    lease_seconds = db_server.settings.stream_lease_seconds
    # The user's three stream slots (the default limit), each held by an answer of about 3 s:
    # the cluster stops (in about 0.1 s) long before they end.
    assert db_server.settings.rate_limit_concurrent_streams == 3
    fake.enqueue(*(Reply.text("y" * 30, chunk_size=1, delay_between=0.1) for _ in range(3)))
    loop = asyncio.get_running_loop()
    claimed = loop.time()  # the slots' leases run from after this
    streams = [asyncio.create_task(client.send(f"long {n}")) for n in range(3)]
    await fake.wait_for_requests(3, timeout=30)
    own_cluster.stop()
    try:
        # The outage lasts until every answer has ended: each fails to save, and the release of
        # its slot fails too (retried in the background while the database is away).
        await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True), 60)
    finally:
        own_cluster.start()
    assert db_server.logs().count("limit.release_failed") == 3
    while True:
        result = await client.send("after the outage")
        # Past the lease, a slot whose release was never retried would have lapsed on its own.
        assert loop.time() - claimed < lease_seconds, (
            "the user was locked out until the leases lapsed"
        )
        if result.status == 200:
            break
        assert result.status in (429, 503), result.raw
        await asyncio.sleep(0.2)
    assert result.assistant_text() == "answer to after the outage"


async def stream_until_deltas(
    base_url: str, token: str, count: int
) -> tuple[str, asyncio.Task[list[str]]]:
    """Start a turn; return its thread id once `count` deltas arrived, and the rest as a task."""
    got_thread: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    enough: asyncio.Event = asyncio.Event()

    async def consume() -> list[str]:
        deltas: list[str] = []
        body = json.dumps({"type": "threads.create", "params": {"input": text_input("story")}})
        async with httpx2.AsyncClient(base_url=base_url, timeout=60) as http:
            try:
                async with http.stream(
                    "POST",
                    "/api/chatkit",
                    content=body,
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    async for frame in sse_frames(response):
                        event = json.loads(frame)
                        if event["type"] == "thread.created":
                            got_thread.set_result(event["thread"]["id"])
                        if event["type"] == "thread.item.updated" and "delta" in event["update"]:
                            deltas.append(event["update"]["delta"])
                            if len(deltas) == count:
                                enough.set()
                        if event["type"] == "error":
                            deltas.append(f"<error: {event['message']}>")
            except (httpx2.TransportError, AssertionError):
                pass  # the server went away mid-stream
        return deltas

    task = asyncio.create_task(consume())
    await asyncio.wait_for(enough.wait(), 30)
    return await got_thread, task


async def saved_answer(client: ChatKitClient, thread_id: str) -> str:
    """The one assistant message stored in `thread_id`."""
    items = await client.call("items.list", {"thread_id": thread_id, "order": "asc"})
    answers = [i for i in items["data"] if i["type"] == "assistant_message"]
    assert len(answers) == 1
    return str(answers[0]["content"][0]["text"])


# The grace is the app's own, so it must hold under a plain `uvicorn app.main:app` too. Under
# `python -m app` one process shows both sides of the grace: an answer that ends within it is
# finished and saved whole, one that outlasts it is cut. Under plain uvicorn only the cut is
# shown: plain uvicorn waits for open connections without a limit of its own, so an answer that
# finishes there would pass even if the app ignored its grace.
@pytest.mark.parametrize("launcher", ["python-m-app", "plain-uvicorn"])
async def test_sigterm_finishes_or_saves_answers_in_flight(
    launcher: str,
    server_env: dict[str, str],
    postgres_url: str,
    fake: FakeLLM,
    offline_server: InProcessServer,
    minter: SharedSecretVerifier,
    make_client: ClientFactory,
    tmp_path: Path,
) -> None:
    fake.reset()
    both_sides = launcher == "python-m-app"
    grace = 3 if both_sides else 1
    # Cut: about 8 s of answer after its third word, far beyond the grace (the test waits only
    # for the grace, whatever the answer's length).
    cut_words = [f"c{i} " for i in range(83)]
    # Finished: about 1.8 s of answer after its third word, well within the grace of 3 s, and
    # longer than 1 s (a grace stuck at 1 s, or none, would cut it).
    whole_words = [f"w{i} " for i in range(40)]
    fake.enqueue(Reply.text_chunks(cut_words, delay_between=0.1))
    if both_sides:
        fake.enqueue(Reply.text_chunks(whole_words, delay_between=0.05))
    env = env_for(server_env, postgres_url, fake, SHUTDOWN_GRACE_SECONDS=str(grace))
    argv = (
        ["-m", "uvicorn", "app.main:app", "--port", "{port}"]
        if launcher == "plain-uvicorn"
        else None
    )
    server = ServerProcess(env=env, log_path=tmp_path / "s.log", argv=argv)
    server.start()
    user_id = f"user-{uuid.uuid4().hex}"
    token = minter.mint(user_id)
    # One after the other, so each takes its own reply; the finished one last, just before the
    # signal, so that all of its remaining answer comes after it.
    cut_thread, cut_consumer = await stream_until_deltas(server.base_url, token, 3)
    if both_sides:
        whole_thread, whole_consumer = await stream_until_deltas(server.base_url, token, 3)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    received = await asyncio.wait_for(cut_consumer, 60)
    if both_sides:
        whole_received = await asyncio.wait_for(whole_consumer, 60)
    assert server.stop() in (0, -signal.SIGTERM)
    logs = server.logs()

    # Another server on the same database (no state of the stopped process) reads what it saved.
    reader = make_client(offline_server.base_url, user_id)
    # Cut by the shutdown: what was produced so far is kept, and the user is told to retry.
    saved = await saved_answer(reader, cut_thread)
    assert saved.startswith("c0 c1 c2 ") and saved != "".join(cut_words)
    assert received[-1].startswith("<error: ") and "retry" in received[-1], received[-3:]
    assert saved.startswith("".join(received[:-1]))
    assert logs.count("shutdown.stream_cut") == 1
    assert "Traceback" not in logs
    if both_sides:
        # Within the grace: the answer finished streaming and was saved whole.
        assert "".join(whole_received) == "".join(whole_words)
        assert await saved_answer(reader, whole_thread) == "".join(whole_words)
