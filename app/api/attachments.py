"""Attachment routes: the direct upload, the two-phase upload target, and signed image previews.

`POST /api/chatkit/upload` (bearer): a multipart form with a `file` field -> the attachment JSON.
`POST|PUT /api/chatkit/attachments/{id}/upload` (bearer): the bytes of an attachment made by
`attachments.create`, as a multipart `file` field or as the raw body -> the attachment JSON.
`GET /api/chatkit/attachments/{id}/preview?exp=&sig=` (no bearer: the signed link is the
permission) -> the image bytes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator
from typing import Annotated

from chatkit.types import Attachment
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.deps import SettingsDep
from app.api.request_body import read_body
from app.auth.dependency import CurrentCaller
from app.chat.attachments import Attachments
from app.context import RequestContext
from app.errors import BadRequestError, PayloadTooLargeError
from app.logging import user_id_var
from app.settings import Settings

logger = logging.getLogger(__name__)
router = APIRouter(tags=["attachments"])

# Room for the multipart envelope around a file of the largest allowed size.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
FILE_FIELD = "file"
MAX_SIGNATURE_CHARS = 128


def get_attachments(request: Request) -> Attachments:
    attachments: Attachments = request.app.state.attachments
    return attachments


AttachmentsDep = Annotated[Attachments, Depends(get_attachments)]


def public_base_url(request: Request, settings: Settings) -> str:
    """Where clients reach this server: PUBLIC_URL, else the scheme and host they called."""
    return settings.public_url or str(request.base_url).rstrip("/")


def _with_base_url(caller: RequestContext, request: Request, settings: Settings) -> RequestContext:
    user_id_var.set(caller.user_id)
    return dataclasses.replace(caller, base_url=public_base_url(request, settings))


def attachment_response(attachment: Attachment) -> Response:
    """The attachment as ChatKit serialises it (integration metadata left out)."""
    body = attachment.model_dump_json(exclude_none=True, context={"exclude_metadata": True})
    return Response(content=body, media_type="application/json")


async def _read_upload(request: Request, attachments: Attachments, settings: Settings) -> bytes:
    limit = attachments.policy.rules.max_bytes + MULTIPART_OVERHEAD_BYTES
    try:
        return await read_body(request, limit, deadline=settings.request_body_timeout)
    except PayloadTooLargeError:
        raise PayloadTooLargeError(
            f"An attachment may be at most {attachments.policy.rules.max_bytes} bytes."
        ) from None


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def _file_part(headers: Headers, body: bytes) -> tuple[str, str | None, bytes]:
    """(file name, declared media type, bytes) of the form's `file` field; 400 if it has none."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(headers, stream(), max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequestError(f"Not a readable multipart form ({exc.message}).") from None
    try:
        part = form.get(FILE_FIELD)
        if not isinstance(part, UploadFile):
            raise BadRequestError(f"The form has no `{FILE_FIELD}` file field.")
        data = await part.read()
        return part.filename or "", part.content_type, data
    finally:
        await form.close()


@router.post("/api/chatkit/upload")
async def upload_direct(
    request: Request, caller: CurrentCaller, attachments: AttachmentsDep, settings: SettingsDep
) -> Response:
    """The `direct` upload strategy: a multipart form with a `file` field."""
    context = _with_base_url(caller, request, settings)
    attachments.require_enabled()
    if not _is_multipart(request):
        raise BadRequestError("Send the file as multipart/form-data in a `file` field.")
    body = await _read_upload(request, attachments, settings)
    name, mime_type, data = await _file_part(request.headers, body)
    attachment = await attachments.upload_direct(
        name=name, mime_type=mime_type, data=data, context=context
    )
    return attachment_response(attachment)


# One route per method: a route of two methods gives both operations one OpenAPI operation id.
@router.post("/api/chatkit/attachments/{attachment_id}/upload")
@router.put("/api/chatkit/attachments/{attachment_id}/upload")
async def upload_bytes(
    attachment_id: str,
    request: Request,
    caller: CurrentCaller,
    attachments: AttachmentsDep,
    settings: SettingsDep,
) -> Response:
    """The `two_phase` upload target named in an attachment's `upload_descriptor`."""
    context = _with_base_url(caller, request, settings)
    attachments.require_enabled()
    await attachments.owned(attachment_id, context)  # 404 before reading someone else's upload
    body = await _read_upload(request, attachments, settings)
    data = (await _file_part(request.headers, body))[2] if _is_multipart(request) else body
    attachment = await attachments.upload(attachment_id, data, context)
    return attachment_response(attachment)


@router.get("/api/chatkit/attachments/{attachment_id}/preview")
async def preview(
    attachment_id: str,
    attachments: AttachmentsDep,
    exp: Annotated[int, Query(ge=0)],
    sig: Annotated[str, Query(max_length=MAX_SIGNATURE_CHARS)],
) -> Response:
    """An image attachment by its signed link (what the ChatKit iframe loads)."""
    blob = await attachments.preview(attachment_id, expires=exp, signature=sig)
    return Response(
        content=blob.data,
        media_type=blob.mime_type,
        headers={
            "Cache-Control": "private, max-age=600",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            # Loaded by the ChatKit iframe, another origin; the link itself is the permission.
            "Cross-Origin-Resource-Policy": "cross-origin",
            "Access-Control-Allow-Origin": "*",
        },
    )
