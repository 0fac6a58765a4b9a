"""Task widgets: reading tool results of any shape, rendering, reading back, actions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from chatkit.actions import Action
from chatkit.types import WidgetItem
from mcp.types import CallToolResult, TextContent

from app.chat.task_actions import check_task_action, parse_task_action, updated_widget_item
from app.chat.task_widgets import (
    MAX_WIDGET_TASKS,
    TaskBoard,
    TaskView,
    board_after_calls,
    read_task,
    read_task_list,
    read_task_widget,
    task_copy_text,
    task_widget,
    tool_result_payload,
)
from app.chat.tool_progress import FinishedToolCall
from app.errors import BadRequestError
from tests.chat_features.strict_widgets import assert_strict_widget

EMBEDDED_LIST: dict[str, Any] = {
    "status": "all",
    "count": 2,
    "tasks": [
        {"id": 1, "title": "buy milk", "description": "", "completed": False},
        {"id": 2, "title": "walk dog", "description": "x", "completed": True},
    ],
}
EXPECTED = [TaskView(1, "buy milk", False), TaskView(2, "walk dog", True)]


def text(value: Any) -> dict[str, str]:
    return {"type": "text", "text": value if isinstance(value, str) else json.dumps(value)}


@pytest.mark.parametrize(
    "result",
    [
        json.dumps(EMBEDDED_LIST),  # structured content, as the agents SDK may pass it on
        text(EMBEDDED_LIST),  # one text part
        [text(EMBEDDED_LIST)],
        json.dumps({"result": EMBEDDED_LIST["tasks"]}),  # a bare list, wrapped by the server
        [text(task) for task in EMBEDDED_LIST["tasks"]],  # one text part per task
        CallToolResult(content=[], structured_content=EMBEDDED_LIST),
        CallToolResult(content=[TextContent(type="text", text=json.dumps(EMBEDDED_LIST))]),
    ],
)
def test_task_lists_read_from_any_result_shape(result: object) -> None:
    assert read_task_list(tool_result_payload(result)) == EXPECTED


def test_status_strings_and_string_ids() -> None:
    payload = [
        {"id": "t1", "title": "a", "status": "open"},
        {"id": "t2", "title": "b", "status": "Done"},
        {"id": "t3", "title": "c", "status": "in_progress"},
    ]
    assert read_task_list(payload) == [
        TaskView("t1", "a", False),
        TaskView("t2", "b", True),
        TaskView("t3", "c", False),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        "You have 2 tasks",
        {"items": []},
        [{"id": 1, "title": "no state"}],
        [{"id": 1, "title": "odd", "status": "someday"}],
        [{"id": True, "title": "bool id", "completed": False}],
        [{"id": 0, "title": "zero", "completed": False}],
        [{"id": "has space", "title": "x", "completed": False}],
        [{"id": 1, "title": 5, "completed": False}],
        [{"id": 1, "title": "ok", "completed": False}, "junk"],
    ],
)
def test_unreadable_lists(payload: object) -> None:
    assert read_task_list(payload) is None


def test_deleted_task_wrapper_and_title_cleaning() -> None:
    assert read_task({"deleted": True, "task": {"id": 3, "title": "x", "completed": True}}) == (
        TaskView(3, "x", True)
    )
    task = read_task({"id": 4, "title": "line\none\u202e" + "y" * 300, "completed": False})
    assert task is not None and "\n" not in task.title and "\u202e" not in task.title
    assert len(task.title) == 200


def call(name: str, result: object, **arguments: Any) -> FinishedToolCall:
    return FinishedToolCall(name, json.dumps(arguments), result)


def test_board_follows_the_calls_in_order() -> None:
    board = board_after_calls(
        [
            call("list_tasks", json.dumps(EMBEDDED_LIST), status="all"),
            call("add_task", json.dumps({"id": 3, "title": "new", "completed": False})),
            call("complete_task", json.dumps({"id": 1, "title": "buy milk", "completed": True})),
            call("delete_task", json.dumps({"deleted": True, "task": EMBEDDED_LIST["tasks"][1]})),
        ]
    )
    assert board == TaskBoard(
        "Your tasks", (TaskView(1, "buy milk", True), TaskView(3, "new", False))
    )


def test_board_headings_and_no_widget_cases() -> None:
    listed = board_after_calls([call("list_tasks", json.dumps({"tasks": []}), status="open")])
    assert listed == TaskBoard("Open tasks", ())
    added = board_after_calls(
        [call("add_task", json.dumps({"id": 9, "title": "t", "completed": False}))]
    )
    assert added is not None and added.heading == "Updated tasks" and len(added.tasks) == 1
    # No task tool, only a deletion without a list, or any unreadable result: no widget.
    assert board_after_calls([call("search_web", "{}")]) is None
    deleted = json.dumps({"id": 9, "title": "t", "completed": False})
    assert board_after_calls([call("delete_task", deleted)]) is None
    unreadable = "An error occurred while running the tool. Task 9 not found."
    assert (
        board_after_calls(
            [call("list_tasks", json.dumps(EMBEDDED_LIST)), call("complete_task", unreadable)]
        )
        is None
    )


def test_long_lists_show_the_first_tasks_and_a_count() -> None:
    tasks = [{"id": i, "title": f"task {i}", "completed": False} for i in range(1, 61)]
    board = board_after_calls([call("list_tasks", json.dumps({"tasks": tasks}))])
    assert board is not None and len(board.tasks) == MAX_WIDGET_TASKS and board.hidden == 10
    widget = task_widget(board).model_dump(mode="json", exclude_none=True)
    assert_strict_widget(widget)
    assert read_task_widget(widget) == board
    assert "10 more" in task_copy_text(board)


@pytest.mark.parametrize(
    "board",
    [
        TaskBoard("Your tasks", tuple(EXPECTED)),
        TaskBoard("Your tasks", ()),
        TaskBoard("Updated tasks", (TaskView("t-1", 'quote " and <b>', False),)),
    ],
)
def test_widgets_are_strict_chatkit_widgets_and_read_back(board: TaskBoard) -> None:
    widget = task_widget(board).model_dump(mode="json", exclude_none=True)
    assert_strict_widget(widget)
    assert read_task_widget(widget) == board
    buttons = [
        child["onClickAction"]
        for row in widget["children"]
        for child in row.get("children", [])
        if child.get("type") == "Button"
    ]
    for task in board.tasks:
        deletes = [
            b
            for b in buttons
            if b["type"] == "tasks.delete" and b["payload"] == {"task_id": task.id}
        ]
        completes = [
            b
            for b in buttons
            if b["type"] == "tasks.complete" and b["payload"] == {"task_id": task.id}
        ]
        assert len(deletes) == 1 and deletes[0]["handler"] == "server"
        assert len(completes) == (0 if task.completed else 1)


def widget_item(board: TaskBoard) -> WidgetItem:
    return WidgetItem(
        id="msg_w", thread_id="thr_1", created_at=datetime.now(), widget=task_widget(board)
    )


@pytest.mark.parametrize(
    ("action_type", "payload"),
    [
        ("tasks.archive", {"task_id": 1}),
        ("tasks.complete", None),
        ("tasks.complete", {}),
        ("tasks.complete", {"task_id": True}),
        ("tasks.complete", {"task_id": -1}),
        ("tasks.complete", {"task_id": "1; drop"}),
        ("tasks.complete", {"task_id": 1, "extra": 2}),
        ("tasks.delete", [1]),
    ],
)
def test_bad_actions_are_refused(action_type: str, payload: Any) -> None:
    with pytest.raises(BadRequestError):
        parse_task_action(Action(type=action_type, payload=payload))


def test_actions_must_name_a_task_of_a_task_widget() -> None:
    item = widget_item(TaskBoard("Your tasks", tuple(EXPECTED)))
    board, action = check_task_action(item, Action(type="tasks.complete", payload={"task_id": 1}))
    assert action.tool == "complete_task" and board.find(1) is not None
    with pytest.raises(BadRequestError, match="not in this widget"):
        check_task_action(item, Action(type="tasks.delete", payload={"task_id": 99}))
    with pytest.raises(BadRequestError, match="needs the id"):
        check_task_action(None, Action(type="tasks.delete", payload={"task_id": 1}))


def test_updated_widget_after_actions() -> None:
    board = TaskBoard("Your tasks", tuple(EXPECTED))
    item = widget_item(board)
    _, complete = check_task_action(item, Action(type="tasks.complete", payload={"task_id": 1}))
    # An unreadable tool result still marks the task done; a readable one wins.
    done = updated_widget_item(item, board, complete, None)
    shown = read_task_widget(done.widget.model_dump(mode="json", exclude_none=True))
    assert shown is not None and shown.find(1) == TaskView(1, "buy milk", True)
    renamed = updated_widget_item(item, board, complete, TaskView(1, "buy oat milk", True))
    assert "buy oat milk" in (renamed.copy_text or "")
    _, delete = check_task_action(item, Action(type="tasks.delete", payload={"task_id": 2}))
    gone = updated_widget_item(item, board, delete, None)
    shown = read_task_widget(gone.widget.model_dump(mode="json", exclude_none=True))
    assert shown is not None and [t.id for t in shown.tasks] == [1]
    assert gone.id == item.id and gone.created_at == item.created_at
