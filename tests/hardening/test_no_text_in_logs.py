"""Failing saves never put the user's text in the server log (issue 9, item 1).

A real server process (JSON logs) on a database of this module's own, where saves are made to
fail the two ways Postgres fails them: a statement cancelled while it waits for a row lock held
by another connection (its exception carried the statement's parameters), and a CHECK
constraint, whose error quotes the failing row ("DETAIL: Failing row contains (...)": the thread
title, a task title). The user's words must not appear in the log either way, and the stream
ends with an error event that says what happened.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import ServerProcess, text_input
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.hardening.streams import Streamed, is_text_delta, stream
from tests.pg_cluster import PostgresCluster

REJECT = "REJECT-ME"


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="module")
async def logs_database(own_cluster: PostgresCluster) -> str:
    admin = await asyncpg.connect(plain_dsn(own_cluster.url("postgres")))
    try:
        await admin.execute("CREATE DATABASE logs")
    finally:
        await admin.close()
    return own_cluster.url("logs")


def is_title_request(request: RecordedRequest) -> bool:
    return "title" in (request.instructions or "").lower() and not request.stream


def answer(request: RecordedRequest) -> Reply:
    text = request.last_user_text or ""
    if is_title_request(request):
        return Reply.text(f"{REJECT} {text}" if text.startswith("titled") else "A title")
    if request.ends_with_tool_result:
        return Reply.text(f"tool said: {request.tool_result_text}")
    if text.startswith("model-400"):
        # Providers' 400s often quote the input they refused.
        return Reply.error(400, f"Invalid 'input[0].content': {text!r} is not allowed")
    if text.startswith("task-reject"):
        return Reply.tool_call("add_task", {"title": f"{REJECT} {text}"})
    if text.startswith("echo-reject"):
        # An answer that quotes the user and breaks the constraint: its save fails mid-turn.
        return Reply.text(f"{REJECT} you said: {text}")
    return Reply.text_chunks([f"w{i} " for i in range(12)], delay_between=0.15)


@pytest.fixture(scope="module")
async def logs_server(
    server_env: dict[str, str],
    logs_database: str,
    fake: FakeLLM,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ServerProcess]:
    env = {
        **server_env,
        "DATABASE_URL": logs_database,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "THREAD_TITLES": "model",
        "LOG_JSON": "true",
        "LOG_LEVEL": "DEBUG",
    }
    fake.responder = answer
    server = ServerProcess(env=env, log_path=tmp_path_factory.mktemp("logs") / "server.log")
    server.start()
    # Rows holding the marker cannot be saved; the error quotes the start of each column.
    conn = await asyncpg.connect(plain_dsn(logs_database))
    try:
        for table, column in (
            ("chat_items", "data"),
            ("chat_threads", "data"),
            ("todo_tasks", "title"),
        ):
            await conn.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_reject "
                f"CHECK (strpos({column}, '{REJECT}') = 0)"
            )
    finally:
        await conn.close()
    yield server
    server.stop()


@dataclass
class User:
    token: str
    base_url: str

    async def send(self, text: str, thread_id: str | None = None, **kwargs: Any) -> Streamed:
        if thread_id is None:
            return await stream(
                self.base_url, self.token, "threads.create", {"input": text_input(text)}, **kwargs
            )
        params = {"thread_id": thread_id, "input": text_input(text)}
        return await stream(self.base_url, self.token, "threads.add_user_message", params, **kwargs)


@pytest.fixture
def user(logs_server: ServerProcess, minter: SharedSecretVerifier) -> User:
    return User(minter.mint(f"user-{uuid.uuid4().hex}"), logs_server.base_url)


class ThreadRowLock:
    """Another connection holding the thread's row FOR UPDATE: inserting an item into the
    thread waits (its foreign key check needs a share lock on that row)."""

    def __init__(self, dsn: str, thread_id: str) -> None:
        self._dsn = dsn
        self._thread_id = thread_id
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None

    async def __aenter__(self) -> ThreadRowLock:
        self._conn = await asyncpg.connect(self._dsn)
        self._tx = self._conn.transaction()
        await self._tx.start()
        await self._conn.execute(
            "SELECT 1 FROM chat_threads WHERE id = $1 FOR UPDATE", self._thread_id
        )
        return self

    async def cancel_waiters(self, timeout: float = 30.0) -> int:
        """Cancel the statements waiting for this lock, once there are some."""
        assert self._conn is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            cancelled = await self._conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity "
                "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
            if cancelled:
                return int(cancelled)
            await asyncio.sleep(0.05)
        raise AssertionError("no statement waited for the lock")

    async def __aexit__(self, *_: object) -> None:
        assert self._conn is not None
        await self._tx.rollback()
        await self._conn.close()


def assert_log_clean(server: ServerProcess, *secrets: str) -> None:
    log = server.logs()
    for secret in secrets:
        assert secret not in log, f"{secret!r} is in the server log"


def assert_error_with_message(result: Streamed) -> str:
    assert result.status == 200, result.body
    assert len(result.errors) == 1, [event.type for event in result.events]
    message = result.errors[0].message
    assert message, result.errors[0]
    return str(message)


def private_text() -> tuple[str, str]:
    tag = uuid.uuid4().hex
    return f"my private plan {tag}", tag


async def test_user_message_save_cancelled_while_waiting_for_a_lock(
    user: User, logs_server: ServerProcess, logs_database: str
) -> None:
    first = await user.send("hello there")
    text, tag = private_text()
    async with ThreadRowLock(plain_dsn(logs_database), first.thread_id) as lock:
        sending = asyncio.create_task(user.send(text, first.thread_id))
        assert await lock.cancel_waiters() >= 1
        result = await sending
    assert_log_clean(logs_server, tag, "private plan", user.token)
    assert "busy" in assert_error_with_message(result)


async def test_answer_save_cancelled_mid_turn(
    user: User, logs_server: ServerProcess, logs_database: str
) -> None:
    first = await user.send("hello there")
    text, tag = private_text()
    lock = ThreadRowLock(plain_dsn(logs_database), first.thread_id)
    cancelling: list[asyncio.Task[int]] = []

    async def lock_on_first_delta(event: Any) -> None:
        if is_text_delta(event) and not cancelling:
            await lock.__aenter__()
            cancelling.append(asyncio.create_task(lock.cancel_waiters()))

    try:
        result = await user.send(text, first.thread_id, on_event=lock_on_first_delta)
        assert cancelling and await cancelling[0] >= 1
    finally:
        if cancelling:
            await lock.__aexit__()
    assert_log_clean(logs_server, tag, "private plan", user.token)
    assert "busy" in assert_error_with_message(result)


async def test_user_message_breaking_a_constraint(user: User, logs_server: ServerProcess) -> None:
    text, tag = private_text()
    result = await user.send(f"{REJECT} {text}")
    assert_log_clean(logs_server, tag, "private plan", user.token)
    assert "could not be saved" in assert_error_with_message(result)


async def test_answer_quoting_the_user_breaking_a_constraint(
    user: User, logs_server: ServerProcess
) -> None:
    text, tag = private_text()
    result = await user.send(f"echo-reject {text}")
    assert_log_clean(logs_server, tag, "private plan", user.token)
    assert "could not be saved" in assert_error_with_message(result)
    # The failure is still visible to an operator, by its code.
    assert '"store.write_failed"' in logs_server.logs()


async def test_title_breaking_a_constraint(user: User, logs_server: ServerProcess) -> None:
    """The model's title (quoting the user) is saved after the answer; its save fails."""
    text, tag = private_text()
    result = await user.send(f"titled {text}")
    assert_log_clean(logs_server, tag, "private plan", user.token)
    assert "could not be saved" in assert_error_with_message(result)


async def test_task_title_breaking_a_constraint(user: User, logs_server: ServerProcess) -> None:
    """The embedded MCP server's save fails inside a tool call."""
    text, tag = private_text()
    result = await user.send(f"task-reject {text}")
    assert_log_clean(logs_server, tag, "private plan", user.token)
    assert result.status == 200 and not result.errors
    answer_text = "".join(
        part.text
        for event in result.of_type("thread.item.done")
        if event.item.type == "assistant_message"
        for part in event.item.content
    )
    assert "could not be saved" in answer_text, answer_text


async def test_model_error_quoting_the_user(user: User, logs_server: ServerProcess) -> None:
    text, tag = private_text()
    result = await user.send(f"model-400 {text}")
    assert_log_clean(logs_server, tag, "private plan", user.token)
    assert "HTTP 400" in assert_error_with_message(result)
    assert '"turn.failed"' in logs_server.logs()
