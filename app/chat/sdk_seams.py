"""The only place that uses private parts of openai-chatkit, and why.

`ChatKitServer.process()` takes raw bytes and validates them with a `TypeAdapter` it builds on
every call (about a tenth of a turn's CPU), and it offers no point between parsing and running
where admission (ownership, limits, the thread claim) can answer with a status code. So the
endpoint parses once with `REQUEST_ADAPTER` and hands the parsed request to the two private
dispatchers `process()` itself calls. pyproject.toml keeps openai-chatkit inside the range
below, and tests/unit/chat/test_sdk_seams.py fails when the installed version leaves it.

`stream_agent_response` merges the run's events with the `AgentContext`'s event queue, one task
reading each. When the run's side raises (the model connection broke, a stop), the task reading
the queue is left pending for ever; asyncio later reports it as "Task was destroyed but it is
pending!", under whatever request's log context is current then. `cancel_queue_reader` finds
that task by the queue it reads (the SDK keeps both private) and cancels it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chatkit.agents import AgentContext
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.types import ChatKitReq, is_streaming_req
from pydantic import TypeAdapter

# The versions these seams were read and tested against (pyproject.toml says the same).
TESTED_CHATKIT_VERSIONS = (">=1.6.5", "<1.7")
REQUEST_ADAPTER: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)


async def dispatch(
    server: ChatKitServer[Any], request: ChatKitReq, context: Any
) -> StreamingResult | NonStreamingResult:
    """What `ChatKitServer.process()` does after parsing, for an already parsed request."""
    if is_streaming_req(request):
        return StreamingResult(server._process_streaming(request, context))
    return NonStreamingResult(await server._process_non_streaming(request, context))


def queue_readers(agent_context: AgentContext[Any]) -> list[asyncio.Task[Any]]:
    """Unfinished tasks waiting on `agent_context`'s event queue."""
    readers = []
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        reader = frame.f_locals.get("self") if frame is not None else None
        if not task.done() and getattr(reader, "queue", None) is agent_context._events:
            readers.append(task)
    return readers


def cancel_queue_reader(agent_context: AgentContext[Any]) -> None:
    """Cancel the task still waiting on `agent_context`'s event queue after its stream ended."""
    for task in queue_readers(agent_context):
        task.cancel()
