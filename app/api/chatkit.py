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
)
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError

from app.api.deps import ChatServerDep, SettingsDep, UsageDep
from app.auth.dependency import CurrentCaller
from app.chat.inflight import InFlight
from app.chat.preflight import preflight
from app.context import RequestContext
from app.db_errors import database_unavailable
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

_request_adapter: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)

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
        return _request_adapter.validate_json(body)
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
    if lease is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await usage.release_stream(lease)
        except Exception:
            logger.warning("limit.release_failed", exc_info=True)


def error_frame(message: str) -> bytes:
    """One ChatKit `error` event as an SSE frame."""
    event = ErrorEvent(code="custom", message=message, allow_retry=True)
    return b"data: " + event.model_dump_json(exclude_none=True).encode() + b"\n\n"


async def stream_then_release(
    result: StreamingResult, usage: UsageStore, lease: str | None, inflight: InFlight
) -> AsyncIterator[bytes]:
    """Relay the SDK's frames; a failure outside the turn (e.g. the database) ends in an event."""
    inflight.enter()
    try:
        async for chunk in result:
            yield chunk
    except Exception as exc:
        logger.warning("stream.failed", extra={"error": type(exc).__name__}, exc_info=True)
        if database_unavailable(exc):
            yield error_frame("The database is unavailable right now. Please try again shortly.")
        else:
            yield error_frame("Something went wrong on the server. Please try again.")
    finally:
        await release_quietly(usage, lease)
        inflight.leave()


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
    lease: str | None = None
    try:
        await preflight(
            chatkit_request,
            server.sql_store,
            caller,
            max_message_chars=settings.max_message_chars,
        )
        if isinstance(chatkit_request, TURN_OPS):
            lease = await admit_turn(usage, caller, settings)
        result = await server.process(body, caller)
    except BaseException as exc:
        await release_quietly(usage, lease)
        if isinstance(exc, StoreNotFoundError):
            raise NotFoundError("Not found.") from None
        if isinstance(exc, NotImplementedError):
            raise FeatureDisabledError("This operation is not enabled on this server.") from None
        if isinstance(exc, Exception) and database_unavailable(exc):
            raise ServiceUnavailableError(
                "The database is unavailable; try again shortly."
            ) from exc
        raise
    if isinstance(result, StreamingResult):
        return StreamingResponse(
            stream_then_release(result, usage, lease, request.app.state.inflight),
            media_type="text/event-stream",
            headers=STREAM_HEADERS,
        )
    await release_quietly(usage, lease)
    return Response(content=result.json, media_type="application/json")
