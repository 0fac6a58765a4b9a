"""Admission across processes: one answer per thread, slots that lapse, tokens at the door."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

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
from tests.server_fixtures import ClientFactory


class SlowText(TypedDict):
    """`Reply.text` options for an answer that streams slowly."""

    chunk_size: int
    delay_between: float


SLOW: SlowText = {"chunk_size": 2, "delay_between": 0.05}


def model_env(server_env: dict[str, str], fake: FakeLLM, **extra: str) -> dict[str, str]:
    return {
        **server_env,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "THREAD_TITLES": "first_words",
        "RATE_LIMIT_TURNS_PER_MINUTE": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def pair(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("admission")
    servers = (
        ServerProcess(env=model_env(server_env, fake), log_path=logs / "a.log"),
        ServerProcess(env=model_env(server_env, fake), log_path=logs / "b.log"),
    )
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def echo(fake: FakeLLM) -> None:
    fake.reset()
    fake.responder = lambda request: Reply.text(f"answer to {request.last_user_text}")


def assert_thread_busy(response_status: int, body: dict[str, object]) -> None:
    assert response_status == 409, body
    assert body["type"] == "thread_busy" and body["status_code"] == 409


async def test_two_messages_on_one_thread_at_once_from_two_processes(
    pair: tuple[ServerProcess, ServerProcess], fake: FakeLLM, make_client: ClientFactory
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    a, b = (make_client(server.base_url, user_id) for server in pair)
    thread_id = (await a.send("first")).thread_id
    fake.enqueue(Reply.text("a slow answer to second, in many small pieces", **SLOW))
    slow = asyncio.create_task(a.send("second", thread_id))
    await fake.wait_for_requests(2, timeout=20)
    racing = await b.send("third", thread_id)
    assert_thread_busy(racing.status, racing.raw[0])
    retry = await b.stream(
        "threads.retry_after_item",
        {"thread_id": thread_id, "item_id": (await _items(a, thread_id))[0]["id"]},
    )
    assert_thread_busy(retry.status, retry.raw[0])
    assert (await slow).status == 200
    # Once the answer ended the thread takes messages again, from either process.
    assert (await b.send("third", thread_id)).assistant_text() == "answer to third"
    items = await _items(a, thread_id)
    assert [i["type"] for i in items] == ["user_message", "assistant_message"] * 3
    # Every model call saw its own message last, never an unanswered one before it.
    assert [r.last_user_text for r in fake.requests] == ["first", "second", "third"]


async def test_two_retries_at_once_make_one_answer(
    pair: tuple[ServerProcess, ServerProcess], fake: FakeLLM, make_client: ClientFactory
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    a, b = (make_client(server.base_url, user_id) for server in pair)
    thread_id = (await a.send("question")).thread_id
    message_id = (await _items(a, thread_id))[0]["id"]
    fake.enqueue(Reply.text("a slow second answer in small pieces", **SLOW))
    params = {"thread_id": thread_id, "item_id": message_id}
    results = await asyncio.gather(
        a.stream("threads.retry_after_item", params), b.stream("threads.retry_after_item", params)
    )
    assert sorted(r.status for r in results) == [200, 409]
    items = await _items(a, thread_id)
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]


async def test_a_new_thread_is_busy_from_its_first_event(
    pair: tuple[ServerProcess, ServerProcess], fake: FakeLLM, make_client: ClientFactory
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    a, b = (make_client(server.base_url, user_id) for server in pair)
    fake.enqueue(Reply.text("a slow first answer in many small pieces", delay_before=1.0, **SLOW))
    body = json.dumps({"type": "threads.create", "params": {"input": text_input("hi")}})
    headers = {"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"}
    async with (
        httpx2.AsyncClient(base_url=pair[0].base_url, timeout=60) as http,
        http.stream("POST", "/api/chatkit", content=body, headers=headers) as response,
    ):
        frames = sse_frames(response)
        first = json.loads(await anext(frames))
        assert first["type"] == "thread.created"
        racing = await b.send("me too", first["thread"]["id"])
        assert_thread_busy(racing.status, racing.raw[0])
        async for _ in frames:
            pass


async def test_a_turn_with_a_token_past_exp_is_not_admitted(
    pair: tuple[ServerProcess, ServerProcess], minter: SharedSecretVerifier
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    now = int(time.time())
    # Inside the door's clock-skew leeway (30 s), but already expired.
    token = minter.mint(user_id, iat=now - 600, exp=now - 5)
    client = ChatKitClient(pair[0].base_url, token)
    try:
        refused = await client.send("hello")
        assert refused.status == 401
        assert refused.raw[0]["type"] == "invalid_token"
        assert "sign in" in str(refused.raw[0]["message"]).lower()
        # Reading is still fine within the leeway.
        assert (await client.request("threads.list", {})).status_code == 200
    finally:
        await client.aclose()


async def test_a_body_that_never_finishes_gets_408(
    server_env: dict[str, str], fake: FakeLLM, make_client: ClientFactory, tmp_path: Path
) -> None:
    server = InProcessServer(
        env=model_env(server_env, fake, REQUEST_BODY_TIMEOUT="1"), log_path=tmp_path / "s.log"
    )
    server.start()
    try:
        client = make_client(server.base_url)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            "POST /api/chatkit HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {client.token}\r\nContent-Length: 100\r\n\r\n"
        )
        writer.write(head.encode() + b'{"type": "threads.list",')
        await writer.drain()
        # The rest of the body never comes: the server answers on its own.
        head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        status_line, *header_lines = head_bytes.decode().split("\r\n")
        assert " 408 " in status_line, head_bytes
        length = next(
            int(line.split(":", 1)[1])
            for line in header_lines
            if line.lower().startswith("content-length")
        )
        body = json.loads(await reader.readexactly(length))
        writer.close()
        assert body["type"] == "request_timeout" and body["status_code"] == 408
    finally:
        server.stop()


async def test_a_killed_process_does_not_lock_its_user_out(
    server_env: dict[str, str], fake: FakeLLM, make_client: ClientFactory, tmp_path: Path
) -> None:
    """kill -9 with three of a user's answers streaming: another process admits them in 60 s."""
    victim = ServerProcess(env=model_env(server_env, fake), log_path=tmp_path / "victim.log")
    # The victim must be a process of its own to be killed; the survivor can be this one.
    survivor = InProcessServer(env=model_env(server_env, fake), log_path=tmp_path / "survivor.log")
    victim.start()
    survivor.start()
    try:
        user_id = f"user-{uuid.uuid4().hex}"
        doomed = make_client(victim.base_url, user_id)
        fake.enqueue(*(Reply.text("x" * 400, chunk_size=1, delay_between=0.5) for _ in range(3)))
        streams = [asyncio.create_task(doomed.send(f"long {n}")) for n in range(3)]
        await fake.wait_for_requests(3, timeout=30)
        client = make_client(survivor.base_url, user_id)
        refused = await client.send("while three stream")
        assert refused.status == 429
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.gather(*streams, return_exceptions=True)
        while True:
            result = await client.send("after the crash")
            if result.status == 200:
                break
            assert result.status == 429, result.raw
            assert time.monotonic() - killed_at < 60, "the user is still locked out"
            await asyncio.sleep(min(2.0, float(result.headers["retry-after"])))
        assert result.assistant_text() == "answer to after the crash"
    finally:
        victim.stop()
        survivor.stop()


async def _items(client: ChatKitClient, thread_id: str) -> list[dict[str, object]]:
    page = await client.call("items.list", {"thread_id": thread_id, "limit": 50, "order": "asc"})
    items: list[dict[str, object]] = page["data"]
    return items


async def test_a_held_lock_ends_the_turn_instead_of_stalling_it(
    server_env: dict[str, str], fake: FakeLLM, make_client: ClientFactory, tmp_path: Path
) -> None:
    server = InProcessServer(
        env=model_env(server_env, fake, DATABASE_STATEMENT_TIMEOUT="1"),
        log_path=tmp_path / "s.log",
    )
    server.start()
    locker = await asyncpg.connect(server_env["DATABASE_URL"].replace("+asyncpg", ""))
    try:
        client = make_client(server.base_url)
        thread_id = (await client.send("first")).thread_id
        async with locker.transaction():
            # Saving the next message must take a key-share lock on this row: it waits.
            await locker.execute("SELECT 1 FROM chat_threads WHERE id = $1 FOR UPDATE", thread_id)
            result = await asyncio.wait_for(client.send("second", thread_id), timeout=20)
        errors = result.of_type("error")
        assert result.status == 200 and errors and errors[-1].message
        # The turn let go of everything: the next message is answered.
        assert (await client.send("third", thread_id)).assistant_text() == "answer to third"
    finally:
        await locker.close()
        server.stop()


async def test_a_token_expiring_mid_turn_ends_it_with_a_sign_in_message(
    server_env: dict[str, str], fake: FakeLLM, minter: SharedSecretVerifier, tmp_path: Path
) -> None:
    server = InProcessServer(
        env=model_env(server_env, fake, AUTH_LEEWAY_SECONDS="0"), log_path=tmp_path / "s.log"
    )
    server.start()
    client = ChatKitClient(server.base_url, minter.mint(f"user-{uuid.uuid4().hex}", ttl_seconds=3))
    try:
        # The model takes longer than the token lives, then calls a tool with it.
        fake.enqueue(Reply.tool_call("list_tasks", {}, delay_before=5.0))
        result = await client.send("what is on my list?")
        errors = result.of_type("error")
        assert errors and "sign in again" in errors[-1].message.lower(), result.raw[-3:]
        # The refusal never went back to the model as if it were the tool's answer.
        assert len(fake.requests) == 1
    finally:
        await client.aclose()
        server.stop()
