"""POST /api/chatkit: authenticate, validate, check ownership, then hand over to ChatKit."""

from __future__ import annotations

import logging

from chatkit.server import StreamingResult
from chatkit.store import NotFoundError as StoreNotFoundError
from chatkit.types import ChatKitReq
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError

from app.api.deps import ChatServerDep, SettingsDep
from app.auth.dependency import CurrentCaller
from app.chat.preflight import preflight
from app.db_errors import database_unavailable
from app.errors import (
    BadRequestError,
    FeatureDisabledError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from app.logging import user_id_var

logger = logging.getLogger(__name__)
router = APIRouter()

_request_adapter: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)

STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


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


@router.post("/api/chatkit")
async def chatkit_endpoint(
    request: Request, caller: CurrentCaller, server: ChatServerDep, settings: SettingsDep
) -> Response:
    body = await read_body(request, settings.max_body_bytes)
    chatkit_request = parse_request(body)
    user_id_var.set(caller.user_id)
    logger.info("chatkit.request", extra={"op": chatkit_request.type})
    try:
        await preflight(
            chatkit_request,
            server.sql_store,
            caller,
            max_message_chars=settings.max_message_chars,
        )
        result = await server.process(body, caller)
    except StoreNotFoundError:
        raise NotFoundError("Not found.") from None
    except NotImplementedError:
        raise FeatureDisabledError("This operation is not enabled on this server.") from None
    except Exception as exc:
        if database_unavailable(exc):
            raise ServiceUnavailableError(
                "The database is unavailable; try again shortly."
            ) from exc
        raise
    if isinstance(result, StreamingResult):
        return StreamingResponse(result, media_type="text/event-stream", headers=STREAM_HEADERS)
    return Response(content=result.json, media_type="application/json")
