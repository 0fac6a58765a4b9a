"""POST /api/chatkit: authenticate, parse, admit, delegate to the ChatKit server, respond."""

from __future__ import annotations

import dataclasses
import logging

from chatkit.server import StreamingResult
from chatkit.types import ChatKitReq
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from app.api.attachments import public_base_url
from app.api.deps import AdmissionDep, ChatServerDep, SettingsDep, StreamCutterDep
from app.api.request_body import read_body
from app.api.sse import sse_response
from app.auth.dependency import CurrentCaller
from app.chat.composer import chatkit_body_limit, check_body_size
from app.chat.sdk_seams import REQUEST_ADAPTER
from app.errors import BadRequestError
from app.logging import user_id_var

logger = logging.getLogger(__name__)
router = APIRouter()


def parse_request(body: bytes) -> ChatKitReq:
    """Validate a ChatKit request body; a malformed one is the client's error (400)."""
    try:
        return REQUEST_ADAPTER.validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else None
        where = ".".join(str(part) for part in first["loc"]) if first else ""
        detail = f" ({where}: {first['msg']})" if first else ""
        raise BadRequestError(f"Not a valid ChatKit request{detail}.") from None


@router.post("/api/chatkit")
async def chatkit_endpoint(
    request: Request,
    caller: CurrentCaller,
    server: ChatServerDep,
    admission: AdmissionDep,
    cutter: StreamCutterDep,
    settings: SettingsDep,
) -> Response:
    user_id_var.set(caller.user_id)
    caller = dataclasses.replace(caller, base_url=public_base_url(request, settings))
    # A recording for dictation may be larger than MAX_BODY_BYTES; nothing else may.
    limit = chatkit_body_limit(settings)
    body = await read_body(request, limit, deadline=settings.request_body_timeout)
    chatkit_request = parse_request(body)
    check_body_size(chatkit_request, len(body), settings)
    logger.info("chatkit.request", extra={"op": chatkit_request.type})
    async with admission.admit(chatkit_request, caller) as ticket:
        result = await server.process_request(chatkit_request, ticket.context)
        if isinstance(result, StreamingResult):
            return sse_response(result, ticket.hand_over(), cutter)
    return Response(content=result.json, media_type="application/json")
