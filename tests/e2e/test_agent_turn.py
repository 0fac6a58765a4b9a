"""The agent turn over real HTTP: fake model (real wire protocol), real MCP servers, uvicorn."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import ChatKitClient, InProcessServer, sse_frames, text_input
from tests.fake_llm import FakeLLM, RecordedRequest, Reply, ToolCall
from tests.recording_mcp import RunningMcp, serve_recording_mcp
from tests.server_fixtures import SECRET, ClientFactory

HISTORY_LIMIT = 4


@pytest.fixture(scope="module")
def recording() -> Iterator[RunningMcp]:
    with serve_recording_mcp(SECRET) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM, recording: RunningMcp) -> None:
    fake.reset()
    recording.state.delay_seconds = 0.0


def _model_env(fake: FakeLLM, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_TIMEOUT": "3",
        "OPENAI_MAX_RETRIES": "0",
        "MCP_TIMEOUT": "2",
        "HISTORY_LIMIT": str(HISTORY_LIMIT),
        # Scripted replies are consumed in order: no title calls in between.
        "THREAD_TITLES": "first_words",
        **extra,
    }


def _start(env: dict[str, str], factory: pytest.TempPathFactory, name: str) -> InProcessServer:
    server = InProcessServer(env=env, log_path=factory.mktemp("logs") / f"{name}.log")
    server.start()
    return server


@pytest.fixture(scope="module")
def responses_server(
    server_env: dict[str, str],
    fake: FakeLLM,
    recording: RunningMcp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessServer]:
    server = _start(
        {**server_env, **_model_env(fake, MCP_SERVER_URL=recording.url)},
        tmp_path_factory,
        "responses",
    )
    yield server
    server.stop()


# The fault tests' server waits less before giving up on the model or the task service; the
# faults below outlast these timeouts by the same factor as the defaults of `_model_env` do.
SHORT_OPENAI_TIMEOUT = 1.5
SHORT_MCP_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def short_timeouts_server(
    server_env: dict[str, str],
    fake: FakeLLM,
    recording: RunningMcp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessServer]:
    env = _model_env(
        fake,
        MCP_SERVER_URL=recording.url,
        OPENAI_TIMEOUT=str(SHORT_OPENAI_TIMEOUT),
        MCP_TIMEOUT=str(SHORT_MCP_TIMEOUT),
    )
    server = _start({**server_env, **env}, tmp_path_factory, "short-timeouts")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chat_completions_server(
    server_env: dict[str, str],
    fake: FakeLLM,
    recording: RunningMcp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessServer]:
    env = _model_env(fake, MCP_SERVER_URL=recording.url, OPENAI_API="chat_completions")
    server = _start({**server_env, **env}, tmp_path_factory, "chat")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedded_mcp_server(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    server = _start({**server_env, **_model_env(fake)}, tmp_path_factory, "embedded")
    yield server
    server.stop()


def tool_then_text(request: RecordedRequest) -> Reply:
    """Many users at once: add a task titled with the user's text, then report the result."""
    if request.ends_with_tool_result:
        return Reply.text(f"done: {request.tool_result_text}")
    return Reply.tool_call("add_task", {"title": request.last_user_text or "?"})


def workflow_items(result: Any) -> list[Any]:
    return [e.item for e in result.of_type("thread.item.added") if e.item.type == "workflow"]


async def model_stream_cut(request: RecordedRequest, *, within: float) -> bool:
    """Whether the server closed the model's stream before its end, waiting up to `within` s.

    The scripted answers below end with a tool call sent after every text delta: a stream cut
    before its end never delivered that call, so no tool can run for it. A server that let the
    answer run on would leave the stream whole (the wait then lasts `within`: longer than the
    rest of the answer, so its tool call has gone out by the time the test looks).
    """
    deadline = asyncio.get_running_loop().time() + within
    while not request.client_disconnected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return request.client_disconnected


async def test_first_turn_calls_the_tool_with_the_callers_token(
    responses_server: InProcessServer,
    recording: RunningMcp,
    fake: FakeLLM,
    make_client: ClientFactory,
    pg_engine: AsyncEngine,
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(responses_server.base_url, user_id)
    fake.enqueue(Reply.tool_call("add_task", {"title": "buy milk"}), Reply.text("Added buy milk."))
    result = await client.send("add buy milk to my list")

    assert result.status == 200
    assert result.assistant_text() == "Added buy milk."
    calls = [c for c in recording.state.calls if c.user_id == user_id]
    assert [(c.tool, c.arguments["title"]) for c in calls] == [("add_task", "buy milk")]
    assert calls[0].authorization == f"Bearer {client.token}"
    assert client.token not in json.dumps(calls[0].arguments)
    assert [t["title"] for t in recording.state.tasks[user_id]] == ["buy milk"]
    # The tool call was visible while it ran: a workflow task, loading then complete.
    workflows = workflow_items(result)
    assert workflows and workflows[0].workflow.tasks[0].status_indicator == "loading"
    updates = [
        e.update for e in result.of_type("thread.item.updated") if e.item_id == workflows[0].id
    ]
    assert any(getattr(u, "task", None) and u.task.status_indicator == "complete" for u in updates)
    # The token is nowhere in what the model saw.
    for request in fake.model_requests():
        assert client.token not in json.dumps(request.json)
    assert client.token not in responses_server.logs()
    async with pg_engine.connect() as conn:
        leaked = await conn.scalar(
            text("select count(*) from chat_items where data like :t"), {"t": f"%{client.token}%"}
        )
    assert leaked == 0
    instructions = fake.model_requests()[0].instructions or ""
    assert "add buy milk" not in instructions and "list_tasks" in instructions


async def test_embedded_mcp_turn_writes_the_users_task(
    embedded_mcp_server: InProcessServer,
    fake: FakeLLM,
    make_client: ClientFactory,
    pg_engine: AsyncEngine,
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(embedded_mcp_server.base_url, user_id)
    fake.enqueue(Reply.tool_call("add_task", {"title": "water plants"}), Reply.text("Added."))
    result = await client.send("add water plants")
    assert result.assistant_text() == "Added."
    assert "water plants" in (fake.model_requests()[-1].tool_result_text or "")
    async with pg_engine.connect() as conn:
        titles = (
            (
                await conn.execute(
                    text("select title from todo_tasks where user_id = :u"), {"u": user_id}
                )
            )
            .scalars()
            .all()
        )
    assert titles == ["water plants"]


async def test_second_turn_sends_history_within_the_limit(
    responses_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(responses_server.base_url)
    fake.enqueue(Reply.text("first answer"))
    thread_id = (await client.send("first question")).thread_id
    fake.enqueue(Reply.text("second answer"))
    await client.send("second question", thread_id)
    second_input = json.dumps(fake.model_requests()[-1].input_items)
    assert "first question" in second_input and "first answer" in second_input
    fake.enqueue(Reply.text("third answer"))
    await client.send("third question", thread_id)
    last = fake.model_requests()[-1]
    assert last.input_item_count <= HISTORY_LIMIT
    assert last.last_user_text == "third question"
    assert "first question" not in json.dumps(last.input_items)


async def test_chat_completions_two_turns_keep_two_assistant_items(
    chat_completions_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(chat_completions_server.base_url)
    fake.enqueue(Reply.text("Hello from turn one."))
    first = await client.send("hi")
    thread_id = first.thread_id
    fake.enqueue(
        Reply.tool_call("list_tasks", {"status": "all"}), Reply.text("Turn two, with a tool.")
    )
    second = await client.send("list my tasks", thread_id)
    assert second.status == 200 and not second.of_type("error")
    assert fake.model_requests()[-1].api == "chat_completions"
    items = await client.call("items.list", {"thread_id": thread_id, "limit": 20, "order": "asc"})
    assistants = [i for i in items["data"] if i["type"] == "assistant_message"]
    assert [a["content"][0]["text"] for a in assistants] == [
        "Hello from turn one.",
        "Turn two, with a tool.",
    ]
    assert len({a["id"] for a in assistants}) == 2
    assert all(a["id"] != "__fake_id__" for a in assistants)
    # The second turn's request carried the first answer as history.
    assert "Hello from turn one." in json.dumps(fake.model_requests()[-2].input_items)


async def test_twenty_users_two_turns_each_use_their_own_token(
    responses_server: InProcessServer,
    recording: RunningMcp,
    fake: FakeLLM,
    minter: SharedSecretVerifier,
) -> None:
    fake.responder = tool_then_text
    users = [f"user-{uuid.uuid4().hex}" for _ in range(20)]
    clients = [ChatKitClient(responses_server.base_url, minter.mint(u)) for u in users]

    async def two_turns(client: ChatKitClient, user_id: str) -> None:
        first = await client.send(f"task-a-{user_id}")
        assert first.status == 200 and not first.of_type("error"), first.raw
        second = await client.send(f"task-b-{user_id}", first.thread_id)
        assert second.status == 200 and not second.of_type("error"), second.raw

    try:
        await asyncio.gather(*(two_turns(c, u) for c, u in zip(clients, users, strict=True)))
    finally:
        for client in clients:
            await client.aclose()
    tokens = {u: f"Bearer {c.token}" for u, c in zip(users, clients, strict=True)}
    calls = [c for c in recording.state.calls if c.user_id in tokens]
    assert len(calls) == 40
    for call in calls:
        owner = call.arguments["title"].split("-", 2)[2]
        assert call.authorization == tokens[owner]
        assert call.user_id == owner
    for user_id in users:
        assert sorted(t["title"] for t in recording.state.tasks[user_id]) == [
            f"task-a-{user_id}",
            f"task-b-{user_id}",
        ]


async def test_stop_mid_stream_saves_partial_text_and_runs_no_later_tool(
    responses_server: InProcessServer,
    recording: RunningMcp,
    fake: FakeLLM,
    make_client: ClientFactory,
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(responses_server.base_url, user_id)
    words = [f"word{i} " for i in range(40)]
    # The answer ends with a tool call: it must never run once the user pressed stop.
    stop_reply = Reply(
        chunks=tuple(words),
        calls=(ToolCall("add_task", {"title": "after stop"}),),
        delay_between=0.1,
    )
    fake.enqueue(stop_reply)
    body = json.dumps(
        {"type": "threads.create", "params": {"input": text_input("tell me a story")}}
    )
    thread_id = None
    seen_deltas = 0
    async with client.http.stream(
        "POST", "/api/chatkit", content=body, headers={"Authorization": f"Bearer {client.token}"}
    ) as response:
        async for frame in sse_frames(response):
            event = json.loads(frame)
            if event["type"] == "thread.created":
                thread_id = event["thread"]["id"]
            if event["type"] == "thread.item.updated" and "delta" in event["update"]:
                seen_deltas += 1
                if seen_deltas == 5:
                    break  # the stop button: the client closes the connection
    assert thread_id is not None
    # The stop cancels the run, which closes the model's stream (the rest would take 3.5 s).
    assert await model_stream_cut(fake.model_requests()[-1], within=len(words) * 0.1 + 1.0)
    params = {"thread_id": thread_id, "limit": 20, "order": "asc"}
    for _ in range(200):  # the partial answer is saved as the turn ends: wait for it (bounded)
        items = await client.call("items.list", params)
        if any(i["type"] == "assistant_message" for i in items["data"]):
            break
        await asyncio.sleep(0.025)
    await asyncio.sleep(0.2)  # a tool call (or a second save) would follow at once
    assert [c for c in recording.state.calls if c.user_id == user_id] == []
    items = await client.call("items.list", params)
    assistants = [i for i in items["data"] if i["type"] == "assistant_message"]
    assert len(assistants) == 1
    partial = assistants[0]["content"][0]["text"]
    assert partial.startswith("word0 word1 ") and "word39" not in partial


async def test_no_tool_call_goes_out_after_a_turn_ends_in_an_error(
    responses_server: InProcessServer,
    recording: RunningMcp,
    fake: FakeLLM,
    make_client: ClientFactory,
) -> None:
    """The thread is deleted mid-answer: saving fails, and the scripted tool call never runs."""
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(responses_server.base_url, user_id)
    words = [f"word{i} " for i in range(30)]
    # The save fails at the end of the text; the tool call's 19 argument deltas follow it, so
    # the server has ~1 s to cut the stream before the call would be complete.
    pace = 0.05
    fake.enqueue(
        Reply(
            chunks=tuple(words),
            calls=(ToolCall("add_task", {"title": "after the thread is gone"}, chunk_size=2),),
            delay_between=pace,
        )
    )
    body = json.dumps({"type": "threads.create", "params": {"input": text_input("story")}})
    events: list[dict[str, Any]] = []
    async with client.http.stream(
        "POST", "/api/chatkit", content=body, headers={"Authorization": f"Bearer {client.token}"}
    ) as response:
        async for frame in sse_frames(response):
            events.append(json.loads(frame))
            deltas = [e for e in events if "delta" in e.get("update", {})]
            if len(deltas) == 5 and "delta" in events[-1].get("update", {}):
                thread_id = events[0]["thread"]["id"]
                assert await client.call("threads.delete", {"thread_id": thread_id}) == {}
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[-1]["message"], events[-3:]
    # The failed turn cancels the run, which closes the model's stream before the tool call.
    assert await model_stream_cut(fake.model_requests()[-1], within=len(words) * pace + 1.5)
    await asyncio.sleep(0.2)  # a tool call would go out at once after the stream's end
    assert [c for c in recording.state.calls if c.user_id == user_id] == []


def _slow_mcp(fake: FakeLLM, mcp: RunningMcp) -> None:
    mcp.state.delay_seconds = 2 * SHORT_MCP_TIMEOUT
    fake.enqueue(Reply.tool_call("list_tasks", {}))


FAULTS: dict[str, Callable[[FakeLLM, RunningMcp], None]] = {
    "model_500": lambda fake, mcp: fake.enqueue(Reply.error(500, "boom")),
    "model_stream_cut": lambda fake, mcp: fake.enqueue(
        Reply.text("partial answer that breaks", chunk_size=3, cut_after=3)
    ),
    "model_timeout": lambda fake, mcp: fake.enqueue(
        Reply.text("too late", delay_before=2 * SHORT_OPENAI_TIMEOUT)
    ),
    "mcp_slow": _slow_mcp,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_failures_end_with_an_error_event_and_keep_the_message(
    fault: str,
    short_timeouts_server: InProcessServer,
    recording: RunningMcp,
    fake: FakeLLM,
    make_client: ClientFactory,
) -> None:
    client = make_client(short_timeouts_server.base_url)
    FAULTS[fault](fake, recording)
    result = await client.send(f"please answer ({fault})")
    assert result.status == 200
    errors = result.of_type("error")
    assert len(errors) == 1 and errors[0].message and errors[0].allow_retry
    assert result.events[-1].type == "error"
    if fault == "mcp_slow":
        assert "task service" in errors[0].message
        # The model was not asked to carry on after the tool call that got no answer.
        assert not any(r.ends_with_tool_result for r in fake.model_requests())
    items = await client.call(
        "items.list", {"thread_id": result.thread_id, "limit": 20, "order": "asc"}
    )
    assert items["data"][0]["type"] == "user_message"
    assert items["data"][0]["content"][0]["text"] == f"please answer ({fault})"
    for item in items["data"][1:]:
        assert item["type"] != "assistant_message" or item["content"][0]["text"].strip()
    async with httpx2.AsyncClient() as http:
        assert (await http.get(f"{short_timeouts_server.base_url}/health")).status_code == 200
    fake.enqueue(Reply.text("still fine"))
    again = await client.send("and now?", result.thread_id)
    assert again.assistant_text() == "still fine"


async def test_mcp_down_gives_an_error_event(
    server_env: dict[str, str],
    fake: FakeLLM,
    make_client: ClientFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.pg_cluster import free_port

    env = {**server_env, **_model_env(fake, MCP_SERVER_URL=f"http://127.0.0.1:{free_port()}/mcp")}
    server = _start(env, tmp_path_factory, "mcp-down")
    try:
        client = make_client(server.base_url)
        result = await client.send("add task x")
        errors = result.of_type("error")
        assert len(errors) == 1 and "task service" in (errors[0].message or "")
        items = await client.call("items.list", {"thread_id": result.thread_id})
        assert [i["type"] for i in items["data"]] == ["user_message"]
        assert fake.model_requests() == []
    finally:
        server.stop()


async def test_offline_model_drives_the_embedded_tools(
    offline_server: InProcessServer, make_client: ClientFactory
) -> None:
    client = make_client(offline_server.base_url)
    added = await client.send("add task buy bread")
    assert "Added task" in added.assistant_text() and "buy bread" in added.assistant_text()
    assert workflow_items(added), "the tool call is shown while it runs"
    listed = await client.send("list tasks", added.thread_id)
    assert "buy bread" in listed.assistant_text()
    other = make_client(offline_server.base_url)
    assert "buy bread" not in (await other.send("list tasks")).assistant_text()
