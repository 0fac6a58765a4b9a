"""The offline demo model: a deterministic agents `Model` driving the TODO tools from commands."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agents import Model, ModelResponse, ModelSettings, ModelTracing, Tool, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponsePromptParam,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from app.agent.attachment_notes import attachment_names

OFFLINE_MODEL_NAME = "offline-demo"

HELP_TEXT = (
    "I am the offline demo model: no language model is configured on this server, so I only "
    'understand a few task commands. Try "add task buy milk", "list tasks", '
    '"complete task 1", "update task 1 to buy oat milk" or "delete task 1". '
    "To chat with a real model, set OPENAI_API_KEY (and optionally OPENAI_BASE_URL and "
    "OPENAI_MODEL) and restart the server."
)


@dataclass(frozen=True, slots=True)
class ToolCommand:
    """A tool call the demo model decided to make."""

    name: str
    arguments: dict[str, Any]


_COMMANDS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?:please\s+)?add(?:\s+a)?\s+task:?\s+(?P<title>.+)$", re.I | re.S), "add_task"),
    (
        re.compile(
            r"^(?:please\s+)?(?:list|show)(?:\s+my)?(?:\s+(?P<status>all|open|completed))?\s+tasks\W*$",
            re.I,
        ),
        "list_tasks",
    ),
    (
        re.compile(r"^(?:please\s+)?(?:complete|finish|done)\s+task\s+#?(?P<id>\d+)\W*$", re.I),
        "complete_task",
    ),
    (
        re.compile(
            r"^(?:please\s+)?(?:update|rename)\s+task\s+#?(?P<id>\d+)\s+to:?\s+(?P<title>.+)$",
            re.I | re.S,
        ),
        "update_task",
    ),
    (
        re.compile(r"^(?:please\s+)?(?:delete|remove)\s+task\s+#?(?P<id>\d+)\W*$", re.I),
        "delete_task",
    ),
]


def parse_command(text: str) -> ToolCommand | None:
    """Map one of the demo commands to a TODO tool call, or None."""
    text = text.strip()
    for pattern, tool in _COMMANDS:
        match = pattern.match(text)
        if not match:
            continue
        groups = match.groupdict()
        if tool == "add_task":
            return ToolCommand(tool, {"title": groups["title"].strip()})
        if tool == "list_tasks":
            return ToolCommand(tool, {"status": (groups.get("status") or "all").lower()})
        if tool == "update_task":
            return ToolCommand(
                tool, {"task_id": int(groups["id"]), "title": groups["title"].strip()}
            )
        return ToolCommand(tool, {"task_id": int(groups["id"])})
    return None


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _typed_text(content: Any) -> str:
    """What the user typed: the first text part (attachments follow it as parts of their own)."""
    if isinstance(content, str):
        return content
    for part in content or []:
        text = _field(part, "text")
        if isinstance(text, str):
            return text
    return ""


def _last_user_text(items: Sequence[Any]) -> str:
    for item in reversed(items):
        if _field(item, "role") == "user":
            return _typed_text(_field(item, "content"))
    return ""


def attached_names(items: Sequence[Any]) -> list[str]:
    """The names of the files attached to the latest user message that has any."""
    for item in reversed(items):
        if _field(item, "role") != "user":
            continue
        content = _field(item, "content")
        for part in content if isinstance(content, list) else []:
            text = _field(part, "text")
            names = attachment_names(text) if isinstance(text, str) else None
            if names:
                return names
        if _field(item, "type") in (None, "message"):
            return []
    return []


def acknowledge_attachments(names: list[str]) -> str:
    """The demo model's answer to files it cannot read."""
    listed = ", ".join(f'"{name}"' for name in names)
    return (
        f"I received your attachment{'s' if len(names) > 1 else ''} {listed}. The offline demo "
        "model cannot look inside files; with a language model configured (OPENAI_API_KEY), "
        "images, PDFs and text files are passed to it."
    )


def _tool_name_for(items: Sequence[Any], call_id: str) -> str | None:
    for item in items:
        if _field(item, "type") == "function_call" and _field(item, "call_id") == call_id:
            name = _field(item, "name")
            return name if isinstance(name, str) else None
    return None


def _format_task(task: dict[str, Any]) -> str:
    mark = "x" if task.get("completed") else " "
    return f"[{mark}] #{task.get('id')} {task.get('title', '')}"


def _unwrap(result: Any) -> Any:
    """MCP results arrive as JSON text, sometimes wrapped as {"result": ...} or content parts."""
    if isinstance(result, str):
        try:
            result = json.loads(result)
        except ValueError:
            return result
    if isinstance(result, list) and len(result) == 1:
        return _unwrap(result[0])
    if isinstance(result, dict) and result.get("type") in {"text", "input_text"}:
        return _unwrap(result.get("text", ""))
    if isinstance(result, dict) and set(result) == {"result"}:
        return result["result"]
    return result


def describe_tool_result(tool: str | None, output: Any) -> str:
    """A short, friendly sentence about what a TODO tool returned."""
    result = _unwrap(output)
    if isinstance(result, str):
        return result if result else "Done."
    if isinstance(result, dict) and isinstance(result.get("error"), str):
        return f"That did not work: {result['error']}"
    tasks = result.get("tasks") if isinstance(result, dict) else result
    if tool == "list_tasks" and isinstance(tasks, list):
        if not tasks:
            return "You have no tasks."
        lines = "\n".join(f"- {_format_task(task)}" for task in tasks if isinstance(task, dict))
        return f"Your tasks:\n{lines}"
    task = result.get("task", result) if isinstance(result, dict) else None
    if isinstance(task, dict) and "id" in task:
        verbs = {
            "add_task": "Added",
            "complete_task": "Completed",
            "update_task": "Updated",
            "delete_task": "Deleted",
        }
        return f"{verbs.get(tool or '', 'Done:')} task {_format_task(task)}."
    return "Done: " + json.dumps(result, ensure_ascii=False)


def _chunks(text: str) -> Iterable[str]:
    """Word-sized pieces, so a client sees the answer stream token by token."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


class OfflineDemoModel(Model):
    """Answers demo commands with TODO tool calls and everything else with a help text."""

    def _decide(
        self, input: str | list[TResponseInputItem], tools: Sequence[Tool]
    ) -> TResponseOutputItem:
        items: list[Any] = [{"role": "user", "content": input}] if isinstance(input, str) else input
        last = items[-1] if items else None
        if last is not None and _field(last, "type") == "function_call_output":
            call_id = str(_field(last, "call_id"))
            text = describe_tool_result(_tool_name_for(items, call_id), _field(last, "output"))
            return _message(text)
        command = parse_command(_last_user_text(items))
        if command is None:
            names = attached_names(items)
            return _message(acknowledge_attachments(names) if names else HELP_TEXT)
        if command.name not in {tool.name for tool in tools}:
            return _message(
                f"The task tool {command.name} is not available right now, so I cannot do that."
            )
        return ResponseFunctionToolCall(
            id=f"fc_{uuid.uuid4().hex}",
            call_id=f"call_{uuid.uuid4().hex}",
            type="function_call",
            name=command.name,
            arguments=json.dumps(command.arguments, ensure_ascii=False),
            status="completed",
        )

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        output = self._decide(input, tools)
        return ModelResponse(output=[output], usage=Usage(requests=1), response_id=None)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        output = self._decide(input, tools)
        for event in stream_events(output):
            yield event


def _message(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{uuid.uuid4().hex}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
    )


def _response(output: list[TResponseOutputItem], status: str) -> Response:
    return Response.model_validate(
        {
            "id": f"resp_{uuid.uuid4().hex}",
            "created_at": 0,
            "model": OFFLINE_MODEL_NAME,
            "object": "response",
            "output": [item.model_dump() for item in output],
            "tool_choice": "auto",
            "tools": [],
            "parallel_tool_calls": False,
            "status": status,
            "usage": ResponseUsage(
                input_tokens=0,
                output_tokens=0,
                total_tokens=0,
                input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            ).model_dump()
            if status == "completed"
            else None,
        }
    )


def stream_events(output: TResponseOutputItem) -> list[TResponseStreamEvent]:
    """The Responses API event sequence for one output item, as a real stream would send it."""
    events: list[Any] = []

    def add(event_type: type[Any], **fields: Any) -> None:
        events.append(event_type.model_validate({**fields, "sequence_number": len(events)}))

    add(ResponseCreatedEvent, type="response.created", response=_response([], "in_progress"))
    add(ResponseInProgressEvent, type="response.in_progress", response=_response([], "in_progress"))
    if isinstance(output, ResponseOutputMessage):
        text = "".join(part.text for part in output.content if isinstance(part, ResponseOutputText))
        started = output.model_copy(update={"content": [], "status": "in_progress"})
        add(
            ResponseOutputItemAddedEvent,
            type="response.output_item.added",
            item=started,
            output_index=0,
        )
        empty = ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[])
        common = {"item_id": output.id, "output_index": 0, "content_index": 0}
        add(ResponseContentPartAddedEvent, type="response.content_part.added", part=empty, **common)
        for piece in _chunks(text):
            add(
                ResponseTextDeltaEvent,
                type="response.output_text.delta",
                delta=piece,
                logprobs=[],
                **common,
            )
        add(
            ResponseTextDoneEvent,
            type="response.output_text.done",
            text=text,
            logprobs=[],
            **common,
        )
        add(
            ResponseContentPartDoneEvent,
            type="response.content_part.done",
            part=output.content[0],
            **common,
        )
    elif isinstance(output, ResponseFunctionToolCall):
        call_started = output.model_copy(update={"arguments": "", "status": "in_progress"})
        add(
            ResponseOutputItemAddedEvent,
            type="response.output_item.added",
            item=call_started,
            output_index=0,
        )
        add(
            ResponseFunctionCallArgumentsDeltaEvent,
            type="response.function_call_arguments.delta",
            item_id=output.id,
            output_index=0,
            delta=output.arguments,
        )
        add(
            ResponseFunctionCallArgumentsDoneEvent,
            type="response.function_call_arguments.done",
            item_id=output.id,
            output_index=0,
            arguments=output.arguments,
            name=output.name,
        )
    add(ResponseOutputItemDoneEvent, type="response.output_item.done", item=output, output_index=0)
    add(
        ResponseCompletedEvent, type="response.completed", response=_response([output], "completed")
    )
    return events
