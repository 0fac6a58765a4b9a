"""Widget actions on a task widget: `tasks.complete` and `tasks.delete`, without a model call.

The action calls the matching TODO tool with the caller's own token and the widget is rebuilt
from what the tool returned. Checks that answer with a status code (`check_task_action`) run in
preflight, before any stream starts; `TaskActions.apply` repeats them for safety.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from chatkit.actions import Action
from chatkit.types import ThreadItem, WidgetItem

from app.chat.task_widgets import (
    COMPLETE_ACTION,
    DELETE_ACTION,
    TaskActionType,
    TaskBoard,
    TaskId,
    TaskView,
    read_task,
    read_task_id,
    read_task_list,
    read_task_widget,
    task_copy_text,
    task_widget,
    tool_result_payload,
)
from app.context import RequestContext
from app.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FeatureDisabledError,
    ServiceUnavailableError,
)
from app.tools.mcp_connection import McpConnector
from app.tools.task_client import TaskServiceUnavailable, TaskToolRefused, call_task_tool

_TOOLS: dict[TaskActionType, str] = {COMPLETE_ACTION: "complete_task", DELETE_ACTION: "delete_task"}
_VERBS: dict[TaskActionType, str] = {COMPLETE_ACTION: "complete", DELETE_ACTION: "delete"}


@dataclass(frozen=True, slots=True)
class TaskAction:
    """A validated action: what to do, to which task."""

    type: TaskActionType
    task_id: TaskId

    @property
    def tool(self) -> str:
        return _TOOLS[self.type]


def parse_task_action(action: Action[str, Any]) -> TaskAction:
    """The action as a TaskAction; BadRequestError for an unknown type or a bad payload."""
    if action.type not in _TOOLS:
        known = ", ".join(_TOOLS)
        raise BadRequestError(f"Unknown action type; this server handles {known}.")
    payload = action.payload
    task_id = read_task_id(payload.get("task_id")) if isinstance(payload, dict) else None
    if task_id is None or set(payload) != {"task_id"}:
        raise BadRequestError('The action payload must be {"task_id": <a task id>}.')
    kind: TaskActionType = COMPLETE_ACTION if action.type == COMPLETE_ACTION else DELETE_ACTION
    return TaskAction(kind, task_id)


def check_task_action(
    item: ThreadItem | None, action: Action[str, Any]
) -> tuple[TaskBoard, TaskAction]:
    """The widget's board and the parsed action; BadRequestError when they do not fit."""
    parsed = parse_task_action(action)
    if item is None:
        raise BadRequestError("A task action needs the id of the widget it comes from (item_id).")
    if not isinstance(item, WidgetItem):
        raise BadRequestError("That item is not a widget.")
    board = read_task_widget(item.widget.model_dump(mode="json", exclude_none=True))
    if board is None:
        raise BadRequestError("That widget is not a task list.")
    if board.find(parsed.task_id) is None:
        raise BadRequestError("That task is not in this widget.")
    return board, parsed


class TaskActions:
    """Task actions and task search, against the caller's TODO MCP server with their token."""

    def __init__(self, connector: McpConnector | None) -> None:
        self._connector = connector

    async def apply(
        self, item: WidgetItem, action: Action[str, Any], context: RequestContext
    ) -> WidgetItem:
        """The widget item after the action (not saved); AppErrors when it cannot be done."""
        board, parsed = check_task_action(item, action)
        if self._connector is None:
            raise FeatureDisabledError("No task service is configured on this server.")
        if context.expires_at is not None and context.expires_at <= time.time():
            raise AuthenticationError("Your session has expired; sign in again.", reason="expired")
        verb = _VERBS[parsed.type]
        try:
            result = await call_task_tool(
                self._connector, context.token, parsed.tool, {"task_id": parsed.task_id}
            )
        except TaskServiceUnavailable:
            raise ServiceUnavailableError(
                f"The task service is unreachable right now, so the task was not {verb}d. "
                "Please try again in a moment.",
                retry_after=2,
            ) from None
        except TaskToolRefused as exc:
            raise ConflictError(f"Could not {verb} the task: {exc.message}") from None
        return updated_widget_item(item, board, parsed, read_task(tool_result_payload(result)))

    async def search(self, context: RequestContext, *, query: str, limit: int) -> list[TaskView]:
        """The caller's tasks whose title contains `query` (any case), read with list_tasks."""
        if self._connector is None:
            raise FeatureDisabledError("No task service is configured on this server.")
        try:
            result = await call_task_tool(
                self._connector, context.token, "list_tasks", {"status": "all"}
            )
        except TaskServiceUnavailable:
            raise ServiceUnavailableError(
                "The task service is unreachable right now. Please try again in a moment.",
                retry_after=2,
            ) from None
        except TaskToolRefused as exc:
            raise ServiceUnavailableError(f"The task service refused: {exc.message}") from None
        tasks = read_task_list(tool_result_payload(result))
        if tasks is None:
            raise ServiceUnavailableError("The task service answered in a form I cannot read.")
        needle = query.strip().casefold()
        return [task for task in tasks if needle in task.title.casefold()][:limit]


def updated_widget_item(
    item: WidgetItem, board: TaskBoard, action: TaskAction, returned: TaskView | None
) -> WidgetItem:
    """The widget after a successful action; the tool's own view of the task wins if readable."""
    if action.type == DELETE_ACTION:
        board = board.without(action.task_id)
    else:
        current = board.find(action.task_id)
        assert current is not None  # checked by check_task_action
        done = returned if returned is not None and returned.id == action.task_id else None
        board = board.with_task(done or TaskView(current.id, current.title, completed=True))
    return item.model_copy(
        update={
            "widget": task_widget(board),
            "copy_text": task_copy_text(board),
        }
    )
