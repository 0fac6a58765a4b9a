"""A ChatKit answer as a server-sent event stream that releases its admission when it ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import anyio
from chatkit.errors import CustomStreamError
from chatkit.server import StreamingResult
from chatkit.types import ErrorEvent
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.chat.admission import Holdings
from app.chat.shutdown import RETRY_MESSAGE, StreamCutter
from app.db_errors import database_failure_message

logger = logging.getLogger(__name__)

STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


def error_frame(message: str) -> bytes:
    """One ChatKit `error` event as an SSE frame."""
    event = ErrorEvent(code="custom", message=message, allow_retry=True)
    return b"data: " + event.model_dump_json(exclude_none=True).encode() + b"\n\n"


async def _relay(
    result: StreamingResult, holdings: Holdings, cutter: StreamCutter
) -> AsyncIterator[bytes]:
    """The SDK's frames; a failure outside the turn (e.g. the database) ends in an event."""
    try:
        with cutter.open_stream() as was_cut:
            try:
                # The SDK's generator itself, not the one more that iterating `result` adds.
                async for chunk in result.json_events:
                    yield chunk
            except asyncio.CancelledError:
                if not was_cut():
                    raise  # the client left (Stop): nothing more to send
                # Shutdown: the SDK saved the partial answer; tell the user to retry.
                yield error_frame(RETRY_MESSAGE)
    except Exception as exc:
        logger.warning("stream.failed", extra={"error": type(exc).__name__})
        worded = exc.message if isinstance(exc, CustomStreamError) else None  # e.g. a failed save
        yield error_frame(
            worded
            or database_failure_message(exc)
            or "Something went wrong on the server. Please retry."
        )
    finally:
        with anyio.CancelScope(shield=True):
            await holdings.aclose()


class EventStreamResponse(StreamingResponse):
    """A StreamingResponse whose body runs in the request's own task, cancelled (through an
    anyio cancel scope, so shielded saves still finish) when the client leaves.

    Starlette's own runs the body in a second task of a task group while the request's task
    listens for the client leaving; a turn waiting for a model slot keeps all of that for
    as long as it waits. One small watcher task does the listening here.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.CancelScope() as body_scope:
            watcher = asyncio.create_task(_cancel_when_client_leaves(receive, body_scope))
            try:
                await self.stream_response(send)
            finally:
                watcher.cancel()


async def _cancel_when_client_leaves(receive: Receive, body_scope: anyio.CancelScope) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:
        pass  # the connection is unusable: end the body as if the client had left
    body_scope.cancel()


def sse_response(
    result: StreamingResult, holdings: Holdings, cutter: StreamCutter
) -> StreamingResponse:
    """Stream `result`; `holdings` (gate slot, leases, thread claim) is closed when it ends."""
    return EventStreamResponse(
        _relay(result, holdings, cutter), media_type="text/event-stream", headers=STREAM_HEADERS
    )
