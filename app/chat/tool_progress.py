"""Shows server-side (MCP) tool calls to the user as workflow tasks while they run."""

from __future__ import annotations

from typing import Any

from agents import Agent, RunContextWrapper, RunHooks, Tool
from chatkit.agents import AgentContext
from chatkit.types import CustomTask

from app.context import RequestContext

_LABELS = {
    "list_tasks": "Listing tasks",
    "add_task": "Adding a task",
    "complete_task": "Completing a task",
    "update_task": "Updating a task",
    "delete_task": "Deleting a task",
}


class ToolProgressHooks(RunHooks[AgentContext[RequestContext]]):
    """Adds a loading task when a tool starts and marks it complete when it ends.

    The ChatKit SDK emits nothing for server-side tool calls, so without this the user sees a
    silent pause while the TODO server works.
    """

    def __init__(self) -> None:
        self._running: dict[int, int] = {}

    async def on_tool_start(
        self,
        context: RunContextWrapper[AgentContext[RequestContext]],
        agent: Agent[Any],
        tool: Tool,
    ) -> None:
        chat = context.context
        task = CustomTask(
            title=f"{_LABELS.get(tool.name, 'Using ' + tool.name)}…",
            icon="check-circle",
            status_indicator="loading",
        )
        await chat.add_workflow_task(task)
        if chat.workflow_item is not None:
            self._running[id(tool)] = len(chat.workflow_item.workflow.tasks) - 1

    async def on_tool_end(
        self,
        context: RunContextWrapper[AgentContext[RequestContext]],
        agent: Agent[Any],
        tool: Tool,
        result: object,
    ) -> None:
        chat = context.context
        index = self._running.pop(id(tool), None)
        if chat.workflow_item is None or index is None:
            return
        if index >= len(chat.workflow_item.workflow.tasks):
            return
        task = CustomTask(
            title=_LABELS.get(tool.name, "Used " + tool.name),
            icon="check-circle",
            content=f"{tool.name} finished",
            status_indicator="complete",
        )
        await chat.update_workflow_task(task, index)
