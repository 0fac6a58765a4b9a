"""The task list widget: read tool results from any TODO MCP server, render them, read them back.

Tool results arrive in many shapes depending on the MCP server and on how the agents SDK passes
them on: structured content or JSON text, a list of tasks or an object holding a `tasks` list,
completion as a `completed` boolean or a `status` string. Anything else is unreadable, and a
turn with an unreadable result gets no widget (its text answer stands alone).

The widget is built as plain data and validated as chatkit's dynamic widget root (the SDK
deprecates constructing its named component classes directly); tests check that every widget
also validates, field for field, as the SDK's strict component types.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from chatkit.actions import ActionConfig
from chatkit.widgets import DynamicWidgetRoot
from mcp.types import CallToolResult

from app.chat.tool_progress import FinishedToolCall

TaskId = int | str
TaskActionType = Literal["tasks.complete", "tasks.delete"]

TASK_TOOLS = ("list_tasks", "add_task", "complete_task", "update_task", "delete_task")
COMPLETE_ACTION: TaskActionType = "tasks.complete"
DELETE_ACTION: TaskActionType = "tasks.delete"
ROOT_ID = "task-list"
MAX_WIDGET_TASKS = 50
MAX_TITLE_CHARS = 200
_STRING_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_DONE_STATUSES = frozenset({"completed", "complete", "done", "closed", "finished", "resolved"})
_OPEN_STATUSES = frozenset(
    {"open", "pending", "todo", "to_do", "to-do", "active", "in_progress", "in-progress", "new"}
)
_HEADINGS = {"open": "Open tasks", "completed": "Completed tasks"}
_MORE = re.compile(r"(\d+)")


@dataclass(frozen=True, slots=True)
class TaskView:
    """One task as the widget shows it."""

    id: TaskId
    title: str
    completed: bool


@dataclass(frozen=True, slots=True)
class TaskBoard:
    """What a task widget shows: a heading, the tasks in order, and how many did not fit."""

    heading: str
    tasks: tuple[TaskView, ...] = ()
    hidden: int = 0
    listed: bool = field(default=True, compare=False)

    def find(self, task_id: TaskId) -> TaskView | None:
        return next((task for task in self.tasks if task.id == task_id), None)

    def with_task(self, task: TaskView) -> TaskBoard:
        """The board with `task` replacing the one with its id (or added at the end)."""
        if self.find(task.id) is None:
            return replace(self, tasks=(*self.tasks, task))
        return replace(self, tasks=tuple(task if t.id == task.id else t for t in self.tasks))

    def without(self, task_id: TaskId) -> TaskBoard:
        return replace(self, tasks=tuple(t for t in self.tasks if t.id != task_id))


# -- reading tool results ----------------------------------------------------------------------


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _unwrap_result(value: Any) -> Any:
    # Servers that return a bare list or scalar put it under "result" in structured content.
    if isinstance(value, dict) and set(value) == {"result"}:
        return value["result"]
    return value


def tool_result_payload(result: object) -> Any:
    """The JSON value of a tool result (a CallToolResult, or what the agents SDK made of it)."""
    if isinstance(result, CallToolResult):
        if result.structured_content is not None:
            return _unwrap_result(result.structured_content)
        texts = [part.text for part in result.content if part.type == "text"]
        return _texts_payload(texts)
    if isinstance(result, str):
        return _unwrap_result(_json(result))
    if isinstance(result, dict):
        if result.get("type") == "text" and isinstance(result.get("text"), str):
            return _unwrap_result(_json(result["text"]))
        return _unwrap_result(result)
    if isinstance(result, list):
        texts = []
        for part in result:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                return None
            texts.append(str(part.get("text", "")))
        return _texts_payload(texts)
    return None


def _texts_payload(texts: Sequence[str]) -> Any:
    if len(texts) == 1:
        return _unwrap_result(_json(texts[0]))
    # Without structured output, a list result comes as one text part per element.
    values = [_json(text) for text in texts]
    return None if any(value is None for value in values) else values


def clean_title(title: str) -> str:
    """A title safe to show and to quote: one line, no control or format characters, bounded."""
    title = " ".join(
        "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in title).split()
    )
    return title if len(title) <= MAX_TITLE_CHARS else title[: MAX_TITLE_CHARS - 1] + "…"


def read_task_id(value: object) -> TaskId | None:
    """A task id as tools and payloads carry it: a positive integer or a short plain string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    if isinstance(value, str) and _STRING_ID.match(value):
        return value
    return None


def _completed(task: dict[str, Any]) -> bool | None:
    completed = task.get("completed")
    if isinstance(completed, bool):
        return completed
    status = task.get("status")
    if isinstance(status, str):
        word = status.strip().lower()
        if word in _DONE_STATUSES:
            return True
        if word in _OPEN_STATUSES:
            return False
    return None


def read_task(value: object) -> TaskView | None:
    """One task from a tool's JSON (also inside {"task": ...}), or None when unreadable."""
    if isinstance(value, dict) and isinstance(value.get("task"), dict) and "id" not in value:
        value = value["task"]
    if not isinstance(value, dict):
        return None
    task_id = read_task_id(value.get("id"))
    title = value.get("title")
    completed = _completed(value)
    if task_id is None or not isinstance(title, str) or completed is None:
        return None
    return TaskView(task_id, clean_title(title), completed)


def read_task_list(value: object) -> list[TaskView] | None:
    """A list of tasks (bare, or an object's `tasks`), or None when any part is unreadable."""
    if isinstance(value, dict):
        value = value.get("tasks")
    if not isinstance(value, list):
        return None
    tasks = [read_task(item) for item in value]
    return None if any(task is None for task in tasks) else [t for t in tasks if t is not None]


# -- a turn's tool calls -----------------------------------------------------------------------


def _argument(arguments: str, name: str) -> Any:
    parsed = _json(arguments) if arguments else None
    return parsed.get(name) if isinstance(parsed, dict) else None


def board_after_calls(calls: Iterable[FinishedToolCall]) -> TaskBoard | None:
    """What the turn's task tool calls showed, in the order they ended; None: no widget."""
    board: TaskBoard | None = None
    for call in calls:
        if call.name not in TASK_TOOLS:
            continue
        payload = tool_result_payload(call.result)
        if call.name == "list_tasks":
            tasks = read_task_list(payload)
            if tasks is None:
                return None
            status = _argument(call.arguments, "status")
            heading = _HEADINGS.get(status if isinstance(status, str) else "", "Your tasks")
            board = TaskBoard(heading, tuple(tasks[:MAX_WIDGET_TASKS]))
            board = replace(board, hidden=max(0, len(tasks) - MAX_WIDGET_TASKS))
            continue
        task = read_task(payload)
        if task is None:
            return None
        if board is None:
            board = TaskBoard("Updated tasks", listed=False)
        deleted = call.name == "delete_task"
        board = board.without(task.id) if deleted else board.with_task(task)
    if board is None or (not board.listed and not board.tasks):
        return None
    return board


# -- the widget --------------------------------------------------------------------------------


def _action(kind: TaskActionType, task_id: TaskId) -> dict[str, Any]:
    return ActionConfig(type=kind, payload={"task_id": task_id}, handler="server").model_dump()


def _row(task: TaskView) -> dict[str, Any]:
    row_id = f"task-{task.id}"
    buttons = []
    if not task.completed:
        buttons.append(
            {
                "type": "Button",
                "label": "Done",
                "size": "sm",
                "variant": "outline",
                "onClickAction": _action(COMPLETE_ACTION, task.id),
            }
        )
    buttons.append(
        {
            "type": "Button",
            "label": "Delete",
            "size": "sm",
            "variant": "ghost",
            "color": "danger",
            "onClickAction": _action(DELETE_ACTION, task.id),
        }
    )
    return {
        "type": "Row",
        "id": row_id,
        "key": row_id,
        "align": "center",
        "gap": 2,
        "children": [
            {
                "type": "Icon",
                "name": "check-circle-filled" if task.completed else "empty-circle",
                "color": "success" if task.completed else "secondary",
            },
            {
                "type": "Text",
                "id": f"{row_id}-title",
                "value": task.title,
                "lineThrough": task.completed,
                "color": "secondary" if task.completed else "prose",
                "truncate": True,
            },
            {"type": "Spacer"},
            *buttons,
        ],
    }


def _summary(board: TaskBoard) -> str:
    done = sum(1 for task in board.tasks if task.completed)
    text = f"{len(board.tasks) - done} open, {done} done"
    return f"{text}, {board.hidden} more not shown" if board.hidden else text


def task_widget(board: TaskBoard) -> DynamicWidgetRoot:
    """The widget showing `board`, with Done and Delete buttons wired to server actions."""
    children: list[dict[str, Any]] = [
        {
            "type": "Row",
            "align": "center",
            "children": [
                {"type": "Title", "id": f"{ROOT_ID}-heading", "value": board.heading, "size": "sm"},
                {"type": "Spacer"},
                {"type": "Caption", "id": f"{ROOT_ID}-summary", "value": _summary(board)},
            ],
        },
        {"type": "Divider"},
        *(_row(task) for task in board.tasks),
    ]
    if not board.tasks:
        children.append({"type": "Text", "value": "No tasks.", "color": "secondary"})
    if board.hidden:
        more = f"…and {board.hidden} more."
        children.append({"type": "Text", "id": f"{ROOT_ID}-more", "value": more, "size": "sm"})
    return DynamicWidgetRoot.model_validate(
        {"type": "Card", "id": ROOT_ID, "key": ROOT_ID, "size": "md", "children": children}
    )


def task_copy_text(board: TaskBoard) -> str:
    """The widget as text (what a user copies, and what a model reads in history)."""
    lines = [f"{board.heading}:"]
    lines += [f"- [{'x' if t.completed else ' '}] #{t.id} {t.title}" for t in board.tasks]
    if not board.tasks:
        lines.append("(no tasks)")
    if board.hidden:
        lines.append(f"…and {board.hidden} more.")
    return "\n".join(lines)


def _children(component: dict[str, Any]) -> list[dict[str, Any]]:
    children = component.get("children")
    if isinstance(children, dict):
        return [children]
    if isinstance(children, list):
        return [child for child in children if isinstance(child, dict)]
    return []


def _find(component: dict[str, Any], component_id: str) -> dict[str, Any] | None:
    if component.get("id") == component_id:
        return component
    for child in _children(component):
        found = _find(child, component_id)
        if found is not None:
            return found
    return None


def _row_task(row: dict[str, Any]) -> TaskView | None:
    title = _find(row, f"{row.get('id')}-title")
    task_id: TaskId | None = None
    for child in _children(row):
        action = child.get("onClickAction")
        if child.get("type") == "Button" and isinstance(action, dict):
            payload = action.get("payload")
            if action.get("type") == DELETE_ACTION and isinstance(payload, dict):
                task_id = read_task_id(payload.get("task_id"))
    if title is None or task_id is None or not isinstance(title.get("value"), str):
        return None
    return TaskView(task_id, title["value"], title.get("lineThrough") is True)


def read_task_widget(widget: dict[str, Any]) -> TaskBoard | None:
    """The board a task widget shows (from its JSON), or None when it is not a task widget."""
    if widget.get("type") != "Card" or widget.get("id") != ROOT_ID:
        return None
    heading = _find(widget, f"{ROOT_ID}-heading")
    if heading is None or not isinstance(heading.get("value"), str):
        return None
    tasks = []
    for child in _children(widget):
        if child.get("type") == "Row" and str(child.get("id", "")).startswith("task-"):
            task = _row_task(child)
            if task is None:
                return None
            tasks.append(task)
    more = _find(widget, f"{ROOT_ID}-more")
    found = _MORE.search(str(more.get("value", ""))) if more is not None else None
    return TaskBoard(heading["value"], tuple(tasks), int(found.group(1)) if found else 0)
