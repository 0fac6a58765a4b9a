"""POST /api/chatkit: authenticate, validate, check ownership and limits, then run ChatKit."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
from chatkit.server import StreamingResult
from chatkit.store import NotFoundError as StoreNotFoundError
from chatkit.types import (
    ChatKitReq,
    ErrorEvent,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsRetryAfterItemReq,
    is_streaming_req,
)
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from app.api.deps import ChatServerDep, SettingsDep, UsageDep
from app.auth.dependency import CurrentCaller
from app.chat.inflight import StreamGate
from app.chat.preflight import preflight
from app.chat.server import REQUEST_ADAPTER
from app.context import RequestContext
from app.db_errors import database_failure_message
from app.errors import (
    BadRequestError,
    FeatureDisabledError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServiceUnavailableError,
)
from app.logging import user_id_var
from app.settings import Settings
from app.store.usage import LimitExceeded, UsageStore

logger = logging.getLogger(__name__)
router = APIRouter()

RELEASE_RETRY_DELAYS = (0.2, 1.0, 3.0, 0.0)
BUSY_RETRY_AFTER_SECONDS = 5
DB_RETRY_AFTER_SECONDS = 2
STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
# Ops that run the model: they count against the per-user turn and stream limits.
TURN_OPS = (
    ThreadsCreateReq,
    ThreadsAddUserMessageReq,
    ThreadsRetryAfterItemReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes) -> ChatKitReq:
    """Validate a ChatKit request body; a malformed one is the client's error (400)."""
    try:
        return REQUEST_ADAPTER.validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else None
        where = ".".join(str(part) for part in first["loc"]) if first else ""
        detail = f" ({where}: {first['msg']})" if first else ""
        raise BadRequestError(f"Not a valid ChatKit request{detail}.") from None


async def admit_turn(usage: UsageStore, caller: RequestContext, settings: Settings) -> str | None:
    """Apply the per-user limits to a turn; returns the stream lease to release at its end."""
    try:
        if settings.rate_limit_turns_per_minute:
            await usage.count_turn(caller.user_id, limit=settings.rate_limit_turns_per_minute)
        if not settings.rate_limit_concurrent_streams:
            return None
        return await usage.acquire_stream(
            caller.user_id,
            limit=settings.rate_limit_concurrent_streams,
            lease_seconds=settings.stream_lease_seconds,
        )
    except LimitExceeded as exc:
        logger.info("limit.exceeded", extra={"reason": str(exc)})
        raise RateLimitedError(str(exc), retry_after=exc.retry_after) from None


async def release_quietly(usage: UsageStore, lease: str | None) -> None:
    """Give the stream slot back, retrying: a lost release would hold it until the lease expires."""
    if lease is None:
        return
    with anyio.CancelScope(shield=True):
        for delay in RELEASE_RETRY_DELAYS:
            try:
                await usage.release_stream(lease)
                return
            except Exception:
                logger.warning("limit.release_failed", exc_info=True)
                await anyio.sleep(delay)


def error_frame(message: str) -> bytes:
    """One ChatKit `error` event as an SSE frame."""
    event = ErrorEvent(code="custom", message=message, allow_retry=True)
    return b"data: " + event.model_dump_json(exclude_none=True).encode() + b"\n\n"


async def stream_then_release(
    result: StreamingResult, usage: UsageStore, lease: str | None, gate: StreamGate
) -> AsyncIterator[bytes]:
    """Relay the SDK's frames; a failure outside the turn (e.g. the database) ends in an event."""
    try:
        async for chunk in result:
            yield chunk
    except Exception as exc:
        logger.warning("stream.failed", extra={"error": type(exc).__name__}, exc_info=True)
        yield error_frame(
            database_failure_message(exc) or "Something went wrong on the server. Please retry."
        )
    finally:
        gate.leave()
        await release_quietly(usage, lease)


@router.post("/api/chatkit")
async def chatkit_endpoint(
    request: Request,
    caller: CurrentCaller,
    server: ChatServerDep,
    usage: UsageDep,
    settings: SettingsDep,
) -> Response:
    user_id_var.set(caller.user_id)
    body = await read_body(request, settings.max_body_bytes)
    chatkit_request = parse_request(body)
    logger.info("chatkit.request", extra={"op": chatkit_request.type})
    gate: StreamGate = request.app.state.stream_gate
    lease: str | None = None
    gated = False
    try:
        await preflight(
            chatkit_request,
            server.sql_store,
            caller,
            max_message_chars=settings.max_message_chars,
        )
        if is_streaming_req(chatkit_request):
            if isinstance(chatkit_request, TURN_OPS):
                lease = await admit_turn(usage, caller, settings)
            gated = await gate.enter(settings.turn_queue_seconds)
            if not gated:
                raise ServiceUnavailableError(
                    "The server is busy; please retry shortly.",
                    retry_after=BUSY_RETRY_AFTER_SECONDS,
                )
        result = await server.process_request(chatkit_request, caller)
    except BaseException as exc:
        if gated:
            gate.leave()
        await release_quietly(usage, lease)
        if isinstance(exc, StoreNotFoundError):
            raise NotFoundError("Not found.") from None
        if isinstance(exc, NotImplementedError):
            raise FeatureDisabledError("This operation is not enabled on this server.") from None
        message = database_failure_message(exc)
        if message is not None:
            raise ServiceUnavailableError(message, retry_after=DB_RETRY_AFTER_SECONDS) from exc
        raise
    if isinstance(result, StreamingResult):
        # From here the stream owns the gate slot and the lease.
        return StreamingResponse(
            stream_then_release(result, usage, lease, gate),
            media_type="text/event-stream",
            headers=STREAM_HEADERS,
        )
    await release_quietly(usage, lease)
    return Response(content=result.json, media_type="application/json")
