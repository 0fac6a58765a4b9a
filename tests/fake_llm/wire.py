"""The bytes the fake sends: Responses API and Chat Completions bodies and SSE frames.

Shapes follow the real API (and the types in `openai.types`), so the real client parses them
with strict validation on.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from tests.fake_llm.recorded import RecordedRequest
from tests.fake_llm.script import Reply, ToolCall

DEFAULT_MODEL = "gpt-4o-mini"

FrameKind = Literal["meta", "delta", "terminal"]

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True)
class Frame:
    """One SSE frame; `delta` frames count for `cut_after`, the `terminal` one is never cut."""

    data: bytes
    kind: FrameKind = "meta"


def new_id(prefix: str) -> str:
    """A unique id in the style of the real API (`msg_…`, `fc_…`, `call_…`)."""
    return f"{prefix}{uuid.uuid4().hex}"


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def error_body(status: int, message: str | None) -> bytes:
    """An OpenAI-style error body for an HTTP error status."""
    error_type, code = _ERROR_TYPES.get(status, ("server_error", None))
    if message is None:
        message = f"The fake model answered {status} as scripted."
    return _dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    ).encode()


@dataclass(frozen=True)
class _Served:
    """Ids fixed once per request, shared by the streamed and the final shapes."""

    reply: Reply
    request: RecordedRequest
    response_id: str
    message_id: str
    call_ids: tuple[tuple[str, str], ...]  # (item id, call_id) per tool call
    created_at: int

    @classmethod
    def build(cls, reply: Reply, request: RecordedRequest, *, chat: bool) -> _Served:
        call_ids = tuple((new_id("fc_"), call.call_id or new_id("call_")) for call in reply.calls)
        return cls(
            reply=reply,
            request=request,
            response_id=new_id("chatcmpl-" if chat else "resp_"),
            message_id=new_id("msg_"),
            call_ids=call_ids,
            created_at=int(time.time()),
        )

    @property
    def model(self) -> str:
        return self.request.model or DEFAULT_MODEL

    def calls(self) -> Iterator[tuple[ToolCall, str, str]]:
        for call, (item_id, call_id) in zip(self.reply.calls, self.call_ids, strict=True):
            yield call, item_id, call_id

    @property
    def input_tokens(self) -> int:
        return max(1, len(self.request.body) // 4)

    @property
    def output_tokens(self) -> int:
        produced = self.reply.joined_text + "".join(c.arguments_json for c in self.reply.calls)
        return max(1, len(produced) // 4)


# ---------------------------------------------------------------- Responses API


def _response_object(
    served: _Served, *, status: str, output: list[dict[str, Any]], final: bool
) -> dict[str, Any]:
    body = served.request.json
    tools = body.get("tools")
    usage = None
    if final:
        usage = {
            "input_tokens": served.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": served.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": served.input_tokens + served.output_tokens,
        }
    return {
        "id": served.response_id,
        "object": "response",
        "created_at": served.created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if final else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": served.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools if isinstance(tools, list) else [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(served: _Served, *, done: bool) -> dict[str, Any]:
    return {
        "id": served.message_id,
        "type": "message",
        "role": "assistant",
        "status": "completed" if done else "in_progress",
        "content": [_output_text(served.reply.joined_text)] if done else [],
    }


def _call_item(call: ToolCall, item_id: str, call_id: str, *, done: bool) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "call_id": call_id,
        "name": call.name,
        "arguments": call.arguments_json if done else "",
    }


def _final_output(served: _Served) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if served.reply.has_message:
        output.append(_message_item(served, done=True))
    for call, item_id, call_id in served.calls():
        output.append(_call_item(call, item_id, call_id, done=True))
    return output


def responses_body(reply: Reply, request: RecordedRequest) -> bytes:
    """The JSON body of a non-streamed Responses API answer."""
    served = _Served.build(reply, request, chat=False)
    output = _final_output(served)
    return _dumps(_response_object(served, status="completed", output=output, final=True)).encode()


def responses_frames(reply: Reply, request: RecordedRequest) -> list[Frame]:
    """The SSE frames of a streamed Responses API answer, `event:` lines included."""
    served = _Served.build(reply, request, chat=False)
    sequence = itertools.count()
    frames: list[Frame] = []

    def emit(event_type: str, *, kind: FrameKind = "meta", **fields: Any) -> None:
        event = {"type": event_type, "sequence_number": next(sequence), **fields}
        frames.append(Frame(f"event: {event_type}\ndata: {_dumps(event)}\n\n".encode(), kind))

    started = _response_object(served, status="in_progress", output=[], final=False)
    emit("response.created", response=started)
    emit("response.in_progress", response=started)

    output_index = 0
    if reply.has_message:
        item_id = served.message_id
        where: dict[str, Any] = {
            "item_id": item_id,
            "output_index": output_index,
            "content_index": 0,
        }
        emit(
            "response.output_item.added",
            output_index=output_index,
            item=_message_item(served, done=False),
        )
        emit("response.content_part.added", **where, part=_output_text(""))
        for chunk in reply.chunks:
            emit("response.output_text.delta", kind="delta", **where, delta=chunk, logprobs=[])
        emit("response.output_text.done", **where, text=reply.joined_text, logprobs=[])
        emit("response.content_part.done", **where, part=_output_text(reply.joined_text))
        emit(
            "response.output_item.done",
            output_index=output_index,
            item=_message_item(served, done=True),
        )
        output_index += 1

    for call, item_id, call_id in served.calls():
        where = {"item_id": item_id, "output_index": output_index}
        emit(
            "response.output_item.added",
            output_index=output_index,
            item=_call_item(call, item_id, call_id, done=False),
        )
        for piece in call.argument_chunks():
            emit("response.function_call_arguments.delta", kind="delta", **where, delta=piece)
        emit("response.function_call_arguments.done", **where, arguments=call.arguments_json)
        emit(
            "response.output_item.done",
            output_index=output_index,
            item=_call_item(call, item_id, call_id, done=True),
        )
        output_index += 1

    completed = _response_object(
        served, status="completed", output=_final_output(served), final=True
    )
    emit("response.completed", kind="terminal", response=completed)
    return frames


# ---------------------------------------------------------------- Chat Completions


def _chat_usage(served: _Served) -> dict[str, Any]:
    return {
        "prompt_tokens": served.input_tokens,
        "completion_tokens": served.output_tokens,
        "total_tokens": served.input_tokens + served.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.calls else "stop"


def chat_body(reply: Reply, request: RecordedRequest) -> bytes:
    """The JSON body of a non-streamed Chat Completions answer."""
    served = _Served.build(reply, request, chat=True)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.joined_text if reply.has_message else None,
        "refusal": None,
        "annotations": [],
    }
    if reply.calls:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call, _, call_id in served.calls()
        ]
    completion = {
        "id": served.response_id,
        "object": "chat.completion",
        "created": served.created_at,
        "model": served.model,
        "system_fingerprint": "fp_fake_llm",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
        ],
        "usage": _chat_usage(served),
    }
    return _dumps(completion).encode()


def chat_frames(reply: Reply, request: RecordedRequest) -> list[Frame]:
    """The SSE frames of a streamed Chat Completions answer, `data: [DONE]` included."""
    served = _Served.build(reply, request, chat=True)
    stream_options = request.json.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    frames: list[Frame] = []

    def chunk(
        delta: dict[str, Any], kind: FrameKind = "meta", *, finish_reason: str | None = None
    ) -> None:
        body: dict[str, Any] = {
            "id": served.response_id,
            "object": "chat.completion.chunk",
            "created": served.created_at,
            "model": served.model,
            "system_fingerprint": "fp_fake_llm",
            "service_tier": "default",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            body["usage"] = None
        frames.append(Frame(f"data: {_dumps(body)}\n\n".encode(), kind))

    first_content = "" if reply.has_message else None
    chunk({"role": "assistant", "content": first_content, "refusal": None})
    for text in reply.chunks:
        chunk({"content": text}, "delta")
    for index, (call, _, call_id) in enumerate(served.calls()):
        opening = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        chunk({"tool_calls": [opening]})
        for piece in call.argument_chunks():
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, "delta")
    chunk({}, "terminal", finish_reason=_finish_reason(reply))

    if include_usage:
        usage_chunk = {
            "id": served.response_id,
            "object": "chat.completion.chunk",
            "created": served.created_at,
            "model": served.model,
            "system_fingerprint": "fp_fake_llm",
            "service_tier": "default",
            "choices": [],
            "usage": _chat_usage(served),
        }
        frames.append(Frame(f"data: {_dumps(usage_chunk)}\n\n".encode()))
    frames.append(Frame(b"data: [DONE]\n\n"))
    return frames
