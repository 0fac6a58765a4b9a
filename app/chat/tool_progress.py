"""Shows server-side (MCP) tool calls to the user as workflow tasks while they run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents import Agent, RunContextWrapper, RunHooks, Tool
from agents.tool_context import ToolContext
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


@dataclass(frozen=True, slots=True)
class FinishedToolCall:
    """One tool call of the turn as it ended: its name, the model's arguments, what it returned."""

    name: str
    arguments: str
    result: object


def _call_key(context: RunContextWrapper[Any], tool: Tool) -> str:
    """The tool call's own id: two parallel calls of one tool are two different calls."""
    if isinstance(context, ToolContext):
        return f"call:{context.tool_call_id}"
    return f"tool:{id(tool)}"  # other tool families carry no call id; one at a time there


class ToolProgressHooks(RunHooks[AgentContext[RequestContext]]):
    """Adds a loading task when a tool starts and marks it complete when it ends.

    The ChatKit SDK emits nothing for server-side tool calls, so without this the user sees a
    silent pause while the TODO server works. Finished calls are kept, in the order they ended,
    in `finished` (the turn builds its task widget from them).
    """

    def __init__(self) -> None:
        # call key -> (workflow item id, index of its task in that workflow)
        self._running: dict[str, tuple[str, int]] = {}
        self.finished: list[FinishedToolCall] = []

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
            index = len(chat.workflow_item.workflow.tasks) - 1
            self._running[_call_key(context, tool)] = (chat.workflow_item.id, index)

    async def on_tool_end(
        self,
        context: RunContextWrapper[AgentContext[RequestContext]],
        agent: Agent[Any],
        tool: Tool,
        result: object,
    ) -> None:
        arguments = context.tool_arguments if isinstance(context, ToolContext) else ""
        self.finished.append(FinishedToolCall(tool.name, arguments, result))
        chat = context.context
        running = self._running.pop(_call_key(context, tool), None)
        if chat.workflow_item is None or running is None:
            return
        workflow_id, index = running
        # A workflow that ended in between (an answer came first) is no longer shown as live.
        if workflow_id != chat.workflow_item.id or index >= len(chat.workflow_item.workflow.tasks):
            return
        task = CustomTask(
            title=_LABELS.get(tool.name, "Used " + tool.name),
            icon="check-circle",
            content=f"{tool.name} finished",
            status_indicator="complete",
        )
        await chat.update_workflow_task(task, index)
