"""Postgres stopping, starting and restarting under a live server: 200 or 503, never a 500."""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping

import asyncpg
import httpx2
import pytest

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import InProcessServer, sse_frames, text_input
from tests.pg_cluster import PostgresCluster

RESTARTS = 4
WORKERS = 4


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="module")
async def restart_database(own_cluster: PostgresCluster) -> str:
    admin = await asyncpg.connect(plain_dsn(own_cluster.url("postgres")))
    try:
        await admin.execute("CREATE DATABASE restarts")
    finally:
        await admin.close()
    return own_cluster.url("restarts")


@pytest.fixture(scope="module")
def restart_server(
    server_env: dict[str, str], restart_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    env = {
        **server_env,
        "DATABASE_URL": restart_database,
        "DATABASE_POOL_SIZE": "4",
        "DATABASE_MAX_OVERFLOW": "4",
        "RATE_LIMIT_TURNS_PER_MINUTE": "0",
        "RATE_LIMIT_CONCURRENT_STREAMS": "0",
        "THREAD_TITLES": "first_words",
    }
    server = InProcessServer(env=env, log_path=tmp_path_factory.mktemp("restart") / "server.log")
    server.start()
    yield server
    server.stop()


def restart(cluster: PostgresCluster) -> None:
    """`pg_ctl restart` with the options the cluster was started with."""
    options = f"-p {cluster.port} -k {cluster.root} -c listen_addresses=127.0.0.1 -c fsync=off"
    cluster._run(
        "pg_ctl",
        "-D",
        str(cluster.datadir),
        "-m",
        "fast",
        "-o",
        options,
        "-l",
        str(cluster.root / "server.log"),
        "-w",
        "-t",
        "60",
        "restart",
    )


class Outcomes:
    """Every answer seen: status codes, and the error events of streams that started."""

    def __init__(self) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()
        self.bodies: dict[int, str] = {}
        self.error_events: list[dict[str, object]] = []

    def record(self, status: int, body: str) -> None:
        self.statuses[status] += 1
        self.bodies.setdefault(status, body[:500])


async def one_request(
    http: httpx2.AsyncClient, token: str, body: Mapping[str, object], outcomes: Outcomes
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream("POST", "/api/chatkit", json=body, headers=headers) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            text = (await response.aread()).decode()
            outcomes.record(response.status_code, text)
            if response.status_code != 200:
                error = json.loads(text)
                assert set(error) == {"type", "message", "status_code"}, error
            return
        outcomes.record(response.status_code, "stream")
        async for frame in sse_frames(response):
            event = json.loads(frame)
            if event["type"] == "error":
                outcomes.error_events.append(event)


async def request_loop(
    base_url: str, token: str, thread_id: str, until: asyncio.Event, outcomes: Outcomes
) -> None:
    bodies: list[dict[str, object]] = [
        {"type": "threads.list", "params": {"limit": 5}},
        {"type": "items.list", "params": {"thread_id": thread_id, "limit": 5}},
        # Turns start new threads: a thread whose claim could not be released during the outage
        # answers 409 thread_busy until the claim lapses (one answer per thread at a time).
        {"type": "threads.create", "params": {"input": text_input("hello during restarts")}},
        {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
    ]
    async with httpx2.AsyncClient(base_url=base_url, timeout=60) as http:
        n = 0
        while not until.is_set():
            try:
                await one_request(http, token, bodies[n % len(bodies)], outcomes)
            except httpx2.TransportError as exc:  # the server itself must stay up
                raise AssertionError(f"the server dropped a request: {exc!r}") from exc
            n += 1


@pytest.fixture
async def users(
    restart_server: InProcessServer, minter: SharedSecretVerifier
) -> AsyncIterator[list[tuple[str, str]]]:
    """WORKERS users, each with a thread of one turn: (token, thread id)."""
    found: list[tuple[str, str]] = []
    async with httpx2.AsyncClient(base_url=restart_server.base_url, timeout=60) as http:
        for _ in range(WORKERS):
            token = minter.mint(f"user-restart-{uuid.uuid4().hex}")
            body = {"type": "threads.create", "params": {"input": text_input("first")}}
            async with http.stream(
                "POST", "/api/chatkit", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status_code == 200
                thread_id = ""
                async for frame in sse_frames(response):
                    event = json.loads(frame)
                    if event["type"] == "thread.created":
                        thread_id = event["thread"]["id"]
            found.append((token, thread_id))
    yield found


def assert_only_200_or_503(outcomes: Outcomes) -> None:
    assert set(outcomes.statuses) <= {200, 503}, (outcomes.statuses, outcomes.bodies)
    for event in outcomes.error_events:
        assert event.get("message"), event


async def test_requests_across_restarts_get_200_or_503(
    restart_server: InProcessServer, own_cluster: PostgresCluster, users: list[tuple[str, str]]
) -> None:
    outcomes = Outcomes()
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(request_loop(restart_server.base_url, token, thread, stop, outcomes))
        for token, thread in users
    ]
    try:
        for _ in range(RESTARTS):
            await asyncio.sleep(0.5)
            await asyncio.to_thread(restart, own_cluster)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*loops)

    assert_only_200_or_503(outcomes)
    # The restarts really met requests, and the server came back by itself.
    assert outcomes.statuses[503] + len(outcomes.error_events) > 0, outcomes.statuses
    recovered = Outcomes()
    token, _ = users[0]
    async with httpx2.AsyncClient(base_url=restart_server.base_url, timeout=60) as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await one_request(http, token, {"type": "threads.list", "params": {}}, recovered)
            if recovered.statuses[200]:
                break
            await asyncio.sleep(0.2)
    assert recovered.statuses[200] == 1, recovered.statuses


async def test_while_postgres_refuses_new_connections_the_answer_is_503(
    restart_server: InProcessServer, own_cluster: PostgresCluster, users: list[tuple[str, str]]
) -> None:
    """A smart shutdown keeps open sessions and answers new ones "cannot connect now" (57P03)."""
    holder = await asyncpg.connect(plain_dsn(own_cluster.url("postgres")))
    outcomes = Outcomes()
    token, thread_id = users[0]
    try:
        own_cluster._run("pg_ctl", "-D", str(own_cluster.datadir), "-m", "smart", "-W", "stop")
        # The server's pooled connections go; every request now needs a new one.
        await holder.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where pid <> pg_backend_pid() and backend_type = 'client backend'"
        )
        async with httpx2.AsyncClient(base_url=restart_server.base_url, timeout=60) as http:
            for body in (
                {"type": "threads.list", "params": {}},
                {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
                {"type": "items.list", "params": {"thread_id": thread_id}},
                {
                    "type": "threads.add_user_message",
                    "params": {"thread_id": thread_id, "input": text_input("now?")},
                },
            ):
                await one_request(http, token, body, outcomes)
    finally:
        await holder.close()
        deadline = time.monotonic() + 30
        while (own_cluster.datadir / "postmaster.pid").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        own_cluster.start()
    assert outcomes.statuses == {503: 4}, (outcomes.statuses, outcomes.bodies)
    assert "database" in outcomes.bodies[503]
