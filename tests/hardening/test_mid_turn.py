"""What happens while an answer is running (issue 9, item 12).

- A title the user gives the thread during its first turn is kept: the automatic title, made
  alongside the answer, must not overwrite it.
- A thread deleted mid-answer ends the stream with an error event that says so.
- An MCP server that does not list its tools in time gets its own message, not a generic one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import ChatKitClient, InProcessServer, text_input
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.hardening.streams import is_text_delta, stream
from tests.recording_mcp import RecordingMcp, build_app
from tests.server_fixtures import SECRET

SLOW_ANSWER = [f"w{i} " for i in range(15)]


def is_title_request(request: RecordedRequest) -> bool:
    return "title" in (request.instructions or "").lower() and not request.stream


def slow_answer(request: RecordedRequest) -> Reply:
    if is_title_request(request):
        return Reply.text("Automatic Title")
    return Reply.text_chunks(SLOW_ANSWER, delay_between=0.15)


@pytest.fixture(autouse=True)
def script(fake: FakeLLM) -> None:
    fake.reset()
    fake.responder = slow_answer


@pytest.fixture(scope="module")
def model_server(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    env = {
        **server_env,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "THREAD_TITLES": "model",
    }
    server = InProcessServer(env=env, log_path=tmp_path_factory.mktemp("midturn") / "s.log")
    server.start()
    yield server
    server.stop()


@dataclass
class User:
    base_url: str
    token: str

    async def call(self, op: str, params: dict[str, Any]) -> Any:
        client = ChatKitClient(self.base_url, self.token)
        try:
            return await client.call(op, params)
        finally:
            await client.aclose()


@pytest.fixture
def user(model_server: InProcessServer, minter: SharedSecretVerifier) -> User:
    return User(model_server.base_url, minter.mint(f"user-{uuid.uuid4().hex}"))


async def test_a_title_given_during_the_first_turn_is_kept(user: User) -> None:
    renamed: list[str] = []

    async def rename_on_first_delta(event: Any) -> None:
        if is_text_delta(event) and not renamed:
            thread_id = created[0]
            await user.call("threads.update", {"thread_id": thread_id, "title": "My own title"})
            renamed.append(thread_id)

    created: list[str] = []

    async def track(event: Any) -> None:
        if event.type == "thread.created":
            created.append(event.thread.id)
        await rename_on_first_delta(event)

    result = await stream(
        user.base_url,
        user.token,
        "threads.create",
        {"input": text_input("plan my week")},
        on_event=track,
    )
    assert renamed and not result.errors
    stored = await user.call("threads.get_by_id", {"thread_id": renamed[0]})
    assert stored["title"] == "My own title"
    titles = [event.thread.title for event in result.of_type("thread.updated")]
    assert "Automatic Title" not in titles, titles


async def test_without_a_rename_the_automatic_title_is_set(user: User) -> None:
    result = await stream(
        user.base_url, user.token, "threads.create", {"input": text_input("plan my week")}
    )
    assert result.of_type("thread.updated")[-1].thread.title == "Automatic Title"


async def test_a_thread_deleted_mid_answer_ends_with_a_worded_error(user: User) -> None:
    deleted: list[str] = []
    created: list[str] = []

    async def delete_on_first_delta(event: Any) -> None:
        if event.type == "thread.created":
            created.append(event.thread.id)
        if is_text_delta(event) and not deleted:
            assert await user.call("threads.delete", {"thread_id": created[0]}) == {}
            deleted.append(created[0])

    result = await stream(
        user.base_url,
        user.token,
        "threads.create",
        {"input": text_input("a long answer")},
        on_event=delete_on_first_delta,
    )
    assert deleted
    assert len(result.errors) == 1, [event.type for event in result.events]
    assert "deleted" in (result.errors[0].message or ""), result.errors[0]


class _SlowToolListing:
    """Holds `tools/list` requests for longer than the server's MCP_TIMEOUT."""

    def __init__(self, app: ASGIApp, delay: float) -> None:
        self._app = app
        self._delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        messages: list[Message] = []
        more = True
        while more:
            message = await receive()
            messages.append(message)
            more = message.get("more_body", False)
        body = b"".join(m.get("body", b"") for m in messages)
        try:
            method = json.loads(body).get("method") if body else None
        except ValueError:
            method = None
        if method == "tools/list":
            await asyncio.sleep(self._delay)
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self._app(scope, replay, send)


@pytest.fixture(scope="module")
def slow_mcp_url() -> Iterator[str]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    app = _SlowToolListing(build_app(RecordingMcp(secret=SECRET), port), delay=6.0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)
    sock.close()


async def test_tools_not_listed_in_time_get_a_task_service_message(
    server_env: dict[str, str],
    fake: FakeLLM,
    slow_mcp_url: str,
    minter: SharedSecretVerifier,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {
        **server_env,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "THREAD_TITLES": "first_words",
        "MCP_SERVER_URL": slow_mcp_url,
        "MCP_TIMEOUT": "2",
    }
    server = InProcessServer(env=env, log_path=tmp_path_factory.mktemp("slowmcp") / "s.log")
    server.start()
    try:
        token = minter.mint(f"user-{uuid.uuid4().hex}")
        result = await stream(
            server.base_url, token, "threads.create", {"input": text_input("list my tasks")}
        )
    finally:
        server.stop()
    assert len(result.errors) == 1, [event.type for event in result.events]
    message = result.errors[0].message or ""
    assert "task service did not answer in time" in message, message
