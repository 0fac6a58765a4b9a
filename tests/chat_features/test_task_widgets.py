"""Task widgets over HTTP: built from tool results, persisted, buttons that call the tools."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from app.chat.task_widgets import TaskBoard, TaskView, read_task_widget
from tests.chat_features.conftest import get_tasks, items_list, widget_items
from tests.chat_features.plain_todo_mcp import RunningPlainTodo
from tests.chat_features.strict_widgets import assert_strict_widget
from tests.e2e.harness import ChatKitClient, InProcessServer, StreamResult
from tests.fake_llm import FakeLLM, Reply, ToolCall
from tests.server_fixtures import SECRET, ClientFactory

# Validating widget events builds the SDK's named widget classes, which it deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Direct usage of named widget:DeprecationWarning")


def raw_widgets(result: StreamResult) -> list[dict[str, Any]]:
    """The widget items of an answer as sent on the wire (JSON)."""
    return [
        frame["item"]
        for frame in result.raw
        if frame.get("type") == "thread.item.done" and frame["item"]["type"] == "widget"
    ]


def board_of(item: dict[str, Any]) -> TaskBoard:
    assert_strict_widget(item["widget"])
    board = read_task_widget(item["widget"])
    assert board is not None, item["widget"]
    return board


def action(kind: str, task_id: object) -> dict[str, Any]:
    return {"type": kind, "payload": {"task_id": task_id}}


async def custom_action(
    client: ChatKitClient, thread_id: str, item_id: str | None, act: dict[str, Any]
) -> StreamResult:
    params: dict[str, Any] = {"thread_id": thread_id, "action": act}
    if item_id is not None:
        params["item_id"] = item_id
    return await client.stream("threads.custom_action", params)


async def stored_widget(client: ChatKitClient, thread_id: str, item_id: str) -> dict[str, Any]:
    [item] = [i for i in await items_list(client, thread_id) if i["id"] == item_id]
    return item


async def test_embedded_tasks_widget_and_its_buttons(
    offline_server: InProcessServer, make_client: ClientFactory, pg_engine: AsyncEngine
) -> None:
    client = make_client(offline_server.base_url)
    first = await client.send("add task buy milk")
    thread_id = first.thread_id
    # A turn that only changed tasks shows the tasks it changed.
    [added] = raw_widgets(first)
    assert [t.title for t in board_of(added).tasks] == ["buy milk"]
    await client.send("add task walk the dog", thread_id)
    listed = await client.send("list tasks", thread_id)
    assert "buy milk" in listed.assistant_text()  # the text answer is still there
    [widget] = raw_widgets(listed)
    board = board_of(widget)
    assert board.heading == "Your tasks"
    assert [(t.title, t.completed) for t in board.tasks] == [
        ("buy milk", False),
        ("walk the dog", False),
    ]
    milk, dog = board.tasks
    # Persisted as sent, and back from items.list.
    assert (await stored_widget(client, thread_id, widget["id"]))["widget"] == widget["widget"]

    done = await custom_action(client, thread_id, widget["id"], action("tasks.complete", milk.id))
    assert done.status == 200
    assert not done.of_type("error") and not done.of_type("thread.item.added")
    [replaced] = [f["item"] for f in done.raw if f["type"] == "thread.item.replaced"]
    assert replaced["id"] == widget["id"]
    assert board_of(replaced).find(milk.id) == TaskView(milk.id, "buy milk", True)
    assert (await stored_widget(client, thread_id, widget["id"]))["widget"] == replaced["widget"]

    deleted = await client.call(
        "threads.sync_custom_action",
        {"thread_id": thread_id, "item_id": widget["id"], "action": action("tasks.delete", dog.id)},
    )
    after = board_of(deleted["updated_item"])
    assert [(t.title, t.completed) for t in after.tasks] == [("buy milk", True)]
    assert (await stored_widget(client, thread_id, widget["id"]))["widget"] == deleted[
        "updated_item"
    ]["widget"]
    # The tools really ran, as this user.
    async with pg_engine.connect() as conn:
        rows = (
            await conn.execute(
                text("select title, completed from todo_tasks where user_id = :u order by id"),
                {"u": client_user(client)},
            )
        ).all()
    assert [tuple(row) for row in rows] == [("buy milk", True)]


def client_user(client: ChatKitClient) -> str:
    return str(jwt.decode(client.token, options={"verify_signature": False})["sub"])


async def test_actions_refused_before_the_stream(
    offline_server: InProcessServer, make_client: ClientFactory
) -> None:
    alice = make_client(offline_server.base_url)
    bob = make_client(offline_server.base_url)
    listed = await alice.send("add task only alice")
    [widget] = raw_widgets(listed)
    [task] = board_of(widget).tasks
    thread_id = listed.thread_id
    good = action("tasks.complete", task.id)
    for op in ("threads.custom_action", "threads.sync_custom_action"):
        params = {"thread_id": thread_id, "item_id": widget["id"], "action": good}
        # Another user's thread and item: 404, nothing run.
        foreign = await bob.request(op, params)
        assert foreign.status_code == 404, foreign.text
        own_thread = (await bob.send("hello")).thread_id
        foreign_item = await bob.request(op, {**params, "thread_id": own_thread})
        assert foreign_item.status_code == 404, foreign_item.text
        cases: list[tuple[dict[str, Any], str]] = [
            ({**params, "action": action("tasks.archive", task.id)}, "Unknown action type"),
            ({**params, "action": {"type": "tasks.complete", "payload": {}}}, "payload"),
            ({**params, "action": action("tasks.complete", "1 OR 1=1")}, "payload"),
            ({**params, "action": {**good, "payload": {"task_id": task.id, "x": 1}}}, "payload"),
            ({**params, "action": action("tasks.complete", 987654321)}, "not in this widget"),
            ({k: v for k, v in params.items() if k != "item_id"}, "item_id"),
        ]
        user_message = next(
            i["id"] for i in await items_list(alice, thread_id) if i["type"] == "user_message"
        )
        cases.append(({**params, "item_id": user_message}, "not a widget"))
        for body, message in cases:
            response = await alice.request(op, body)
            assert response.status_code == 400, (body, response.text)
            error = response.json()
            assert error["type"] == "bad_request" and message in error["message"], error
    # Nothing changed.
    assert board_of(await stored_widget(alice, thread_id, widget["id"])).tasks == (task,)


async def test_failing_tool_leaves_the_widget_unchanged(
    offline_server: InProcessServer, make_client: ClientFactory
) -> None:
    client = make_client(offline_server.base_url)
    listed = await client.send("add task soon gone")
    [widget] = raw_widgets(listed)
    [task] = board_of(widget).tasks
    await client.send(f"delete task {task.id}", listed.thread_id)  # the widget is now stale
    streamed = await custom_action(
        client, listed.thread_id, widget["id"], action("tasks.complete", task.id)
    )
    [error] = streamed.of_type("error")
    assert "Could not complete the task" in error.message and str(task.id) in error.message
    assert not [f for f in streamed.raw if f["type"] == "thread.item.replaced"]
    response = await client.request(
        "threads.sync_custom_action",
        {
            "thread_id": listed.thread_id,
            "item_id": widget["id"],
            "action": action("tasks.delete", task.id),
        },
    )
    assert response.status_code == 409 and "Could not delete the task" in response.json()["message"]
    assert (await stored_widget(client, listed.thread_id, widget["id"]))["widget"] == widget[
        "widget"
    ]


async def test_independent_server_with_other_shapes(
    plain_server: InProcessServer,
    plain_mcp: RunningPlainTodo,
    fake: FakeLLM,
    make_client: ClientFactory,
) -> None:
    client = make_client(plain_server.base_url)
    user_id = client_user(client)
    plain_mcp.state.add(user_id, "water plants")
    plain_mcp.state.add(user_id, "pay rent", status="done")
    fake.enqueue(Reply.tool_call("list_tasks", {"status": "all"}), Reply.text("Two tasks."))
    listed = await client.send("what is on my list?")
    assert listed.assistant_text() == "Two tasks."
    [widget] = raw_widgets(listed)
    board = board_of(widget)
    assert [(t.id, t.title, t.completed) for t in board.tasks] == [
        (board.tasks[0].id, "water plants", False),
        (board.tasks[1].id, "pay rent", True),
    ]
    assert all(isinstance(t.id, str) for t in board.tasks)
    requests_before = len(fake.model_requests())
    done = await custom_action(
        client, listed.thread_id, widget["id"], action("tasks.complete", board.tasks[0].id)
    )
    [replaced] = [f["item"] for f in done.raw if f["type"] == "thread.item.replaced"]
    assert all(t.completed for t in board_of(replaced).tasks)
    # No model call; the tool ran with the caller's own token and the task's string id.
    assert len(fake.model_requests()) == requests_before
    last = plain_mcp.state.calls[-1]
    assert (last.tool, last.arguments, last.authorization) == (
        "complete_task",
        {"task_id": board.tasks[0].id},
        f"Bearer {client.token}",
    )
    # The mention search reads the same server.
    found = await get_tasks(client, query="PLANT")
    assert found.status_code == 200
    assert found.json() == {
        "data": [{"id": board.tasks[0].id, "title": "water plants", "completed": True}]
    }


async def test_unreadable_results_mean_no_widget(
    plain_server: InProcessServer,
    plain_mcp: RunningPlainTodo,
    fake: FakeLLM,
    make_client: ClientFactory,
) -> None:
    client = make_client(plain_server.base_url)
    plain_mcp.state.add(client_user(client), "something")
    plain_mcp.state.unreadable = True
    fake.enqueue(Reply.tool_call("list_tasks", {}), Reply.text("You have one task."))
    result = await client.send("list please")
    assert result.assistant_text() == "You have one task."
    assert widget_items(result) == [] and not result.of_type("error")
    response = await get_tasks(client)
    assert response.status_code == 503 and response.json()["type"] == "service_unavailable"


async def test_widgets_with_the_recording_server_and_parallel_calls(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    fake.enqueue(
        Reply.tool_calls(
            ToolCall("add_task", {"title": "one"}), ToolCall("add_task", {"title": "two"})
        ),
        Reply.text("Added both."),
    )
    result = await client.send("add one and two")
    [widget] = raw_widgets(result)
    assert sorted(t.title for t in board_of(widget).tasks) == ["one", "two"]
    # Both parallel calls of one tool finished in the progress workflow.
    workflow = [e.item for e in result.of_type("thread.item.done") if e.item.type == "workflow"]
    tasks = workflow[-1].workflow.tasks if workflow else []
    assert [t.status_indicator for t in tasks] == ["complete", "complete"]
    # The next turn's history carries the widget as its short text, not its JSON.
    fake.enqueue(Reply.text("Sure."))
    await client.send("thanks", result.thread_id)
    history = fake.model_requests()[-1].user_texts
    shown = [text for text in history if text.startswith("A widget was shown to the user")]
    assert len(shown) == 1 and "] #" in shown[0] and "one" in shown[0] and "two" in shown[0]
    assert not any('"onClickAction"' in text for text in history)


@pytest.mark.parametrize("op", ["threads.custom_action", "threads.sync_custom_action"])
async def test_expired_sessions_cannot_act(
    offline_server: InProcessServer, make_client: ClientFactory, op: str
) -> None:
    client = make_client(offline_server.base_url)
    listed = await client.send("add task tick")
    [widget] = raw_widgets(listed)
    [task] = board_of(widget).tasks
    # Expired a moment ago: still inside the verifier's leeway, so the door lets it in.
    stale = SharedSecretVerifier(SECRET).mint(
        client_user(client), ttl_seconds=1, iat=int(time.time()) - 10, exp=int(time.time()) - 5
    )
    client.token = stale
    response = await client.request(
        op,
        {
            "thread_id": listed.thread_id,
            "item_id": widget["id"],
            "action": action("tasks.complete", task.id),
        },
    )
    assert response.status_code == 401, response.text
