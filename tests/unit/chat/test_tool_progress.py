"""Tool progress: each call's own workflow task, even for parallel calls of one tool."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

from agents import Agent, RunConfig, Runner, Tool, function_tool
from agents.items import TResponseOutputItem
from agents.testing import ScriptedModel, assistant_message, function_call
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.types import (
    CustomTask,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    WorkflowItem,
    WorkflowTaskAdded,
    WorkflowTaskUpdated,
)

from app.chat.tool_progress import ToolProgressHooks
from app.context import RequestContext
from app.store.chatkit_store import SqlStore
from app.store.database import create_engine


@function_tool
async def list_tasks(delay: float) -> str:
    """List tasks after `delay` seconds."""
    await asyncio.sleep(delay)
    return json.dumps({"tasks": [], "delay": delay})


@function_tool
async def lookup_weather(city: str) -> str:
    """The weather in `city`."""
    return f"sunny in {city}"


async def run_turn(
    sqlite_url: str, calls: list[TResponseOutputItem], tools: list[Tool]
) -> tuple[WorkflowItem | None, ToolProgressHooks]:
    """One scripted turn (the tool calls, then an answer) through the real agents runner and
    ChatKit's stream_agent_response; the workflow item as the client would have built it."""
    engine = create_engine(sqlite_url)
    context: AgentContext[RequestContext] = AgentContext(
        thread=ThreadMetadata(id="thr_progress", created_at=datetime.now()),
        store=SqlStore(engine),
        request_context=RequestContext(user_id="u1", token="t", request_id="r1"),
    )
    model = ScriptedModel([calls, [assistant_message("Here they are.")]])
    agent: Agent[AgentContext[RequestContext]] = Agent(
        name="t", instructions="test", model=model, tools=tools
    )
    hooks = ToolProgressHooks()
    result = Runner.run_streamed(
        agent, "list", context=context, hooks=hooks, run_config=RunConfig(tracing_disabled=True)
    )
    workflow: WorkflowItem | None = None
    async for event in stream_agent_response(context, result):
        if isinstance(event, ThreadItemAddedEvent) and isinstance(event.item, WorkflowItem):
            workflow = event.item.model_copy(deep=True)
        elif isinstance(event, ThreadItemUpdatedEvent) and workflow is not None:
            if isinstance(event.update, WorkflowTaskAdded):
                workflow.workflow.tasks.append(event.update.task)
            elif isinstance(event.update, WorkflowTaskUpdated):
                workflow.workflow.tasks[event.update.task_index] = event.update.task
        elif isinstance(event, ThreadItemDoneEvent) and isinstance(event.item, WorkflowItem):
            workflow = event.item
    await engine.dispose()
    return workflow, hooks


async def test_two_parallel_calls_of_one_tool_both_complete(sqlite_url: str) -> None:
    workflow, hooks = await run_turn(
        sqlite_url,
        # The first call ends last: with progress keyed by tool, it stayed loading forever.
        [
            function_call("list_tasks", {"delay": 0.2}, call_id="call_slow"),
            function_call("list_tasks", {"delay": 0.0}, call_id="call_fast"),
        ],
        [list_tasks],
    )

    assert workflow is not None
    indicators = [getattr(task, "status_indicator", None) for task in workflow.workflow.tasks]
    assert indicators == ["complete", "complete"]
    assert [getattr(task, "title", None) for task in workflow.workflow.tasks] == [
        "Listing tasks",
        "Listing tasks",
    ]
    assert sorted(json.loads(call.arguments)["delay"] for call in hooks.finished) == [0.0, 0.2]
    # Kept in the order they ended: the fast call first.
    assert json.loads(hooks.finished[0].arguments)["delay"] == 0.0
    assert all(call.name == "list_tasks" for call in hooks.finished)


async def test_a_tool_without_a_label_is_named_and_its_result_kept(sqlite_url: str) -> None:
    workflow, hooks = await run_turn(
        sqlite_url,
        [function_call("lookup_weather", {"city": "Oslo"}, call_id="call_weather")],
        [lookup_weather],
    )

    assert workflow is not None
    (task,) = workflow.workflow.tasks
    assert isinstance(task, CustomTask)
    assert (task.title, task.content, task.status_indicator) == (
        "Used lookup_weather",
        "lookup_weather finished",
        "complete",
    )
    assert [(call.name, json.loads(call.arguments), call.result) for call in hooks.finished] == [
        ("lookup_weather", {"city": "Oslo"}, "sunny in Oslo")
    ]
