"""Attachments: uploads in both ChatKit strategies, previews, clean-up; bytes behind a blob store.

Two-phase: `attachments.create` (through the ChatKit SDK, which calls `create_attachment` and
saves the result) answers with an `upload_descriptor` pointing at this server's authenticated
upload route, where the bytes arrive next (`upload`). Direct: one multipart POST (`upload_direct`).
An attachment's stored JSON carries `metadata` the SDK never returns to clients: the declared
size, whether its bytes arrived, and how its preview is shown.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from chatkit.store import AttachmentStore
from chatkit.store import NotFoundError as StoreNotFoundError
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
)
from pydantic import AnyUrl
from sqlalchemy.ext.asyncio import AsyncEngine

from app.chat.attachment_checks import (
    AttachmentRules,
    check_content,
    check_declared,
    clean_name,
    declared_type,
    is_image,
)
from app.chat.preview_links import PREVIEW_KEY_NAME, PreviewLinks
from app.context import RequestContext
from app.errors import ConflictError, FeatureDisabledError, NotFoundError
from app.settings import Settings
from app.store.attachment_blobs import AttachmentBlobs, Blob, SqlAttachmentBlobs
from app.store.chatkit_store import SqlStore, new_item_id
from app.store.signing_keys import load_signing_key
from app.store.sql import utcnow

logger = logging.getLogger(__name__)

DISABLED_MESSAGE = "Attachments are not enabled on this server."
# Images up to this size are previewed from a data URL (no link to expire).
DATA_URL_PREVIEW_MAX_BYTES = 256 * 1024
# An upload never sent in a message is deleted after this long.
UNUSED_UPLOAD_TTL = timedelta(hours=24)
# How often a process also sweeps every user's unused uploads (on the next upload).
SWEEP_ALL_EVERY_SECONDS = 600.0
MAX_ATTACHMENTS_PER_MESSAGE = 10


def upload_path(attachment_id: str) -> str:
    return f"/api/chatkit/attachments/{attachment_id}/upload"


@dataclass(frozen=True, slots=True)
class AttachmentPolicy:
    """Whether attachments are on, and the rules uploads are held to."""

    enabled: bool
    rules: AttachmentRules


def attachment_policy(settings: Settings) -> AttachmentPolicy:
    return AttachmentPolicy(
        enabled=settings.attachments,
        rules=AttachmentRules(
            max_bytes=settings.attachment_max_bytes, types=frozenset(settings.attachment_types)
        ),
    )


def data_url(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def _meta(attachment: Attachment) -> dict[str, Any]:
    return dict(attachment.metadata or {})


def is_uploaded(attachment: Attachment) -> bool:
    """Whether the attachment's bytes have arrived (always, for a direct upload)."""
    return bool(_meta(attachment).get("uploaded"))


def declared_size(attachment: Attachment) -> int:
    size = _meta(attachment).get("size")
    return size if isinstance(size, int) else 0


class Attachments(AttachmentStore[RequestContext]):
    """Creates, receives, previews and deletes the caller's attachments."""

    def __init__(
        self,
        *,
        store: SqlStore,
        blobs: AttachmentBlobs,
        previews: PreviewLinks,
        policy: AttachmentPolicy,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._previews = previews
        self.policy = policy
        self._last_full_sweep = 0.0

    def require_enabled(self) -> None:
        if not self.policy.enabled:
            raise FeatureDisabledError(DISABLED_MESSAGE)

    # The SDK's AttachmentStore ------------------------------------------------------------
    def generate_attachment_id(self, mime_type: str, context: RequestContext) -> str:
        return new_item_id("attachment")

    async def create_attachment(
        self, input: AttachmentCreateParams, context: RequestContext
    ) -> Attachment:
        """Phase one: an attachment awaiting its bytes at this server's upload route."""
        self.require_enabled()
        name = clean_name(input.name)
        mime_type = declared_type(input.mime_type, name)
        check_declared(self.policy.rules, mime_type=mime_type, size=input.size)
        await self._sweep(context.user_id)
        attachment_id = self.generate_attachment_id(mime_type, context)
        base_url = _base_url(context)
        descriptor = AttachmentUploadDescriptor(
            url=AnyUrl(base_url + upload_path(attachment_id)), method="POST", headers={}
        )
        metadata = {"size": input.size, "uploaded": False}
        if is_image(mime_type):
            return ImageAttachment(
                id=attachment_id,
                name=name,
                mime_type=mime_type,
                upload_descriptor=descriptor,
                preview_url=AnyUrl(await self._previews.url(attachment_id, base_url)),
                metadata={**metadata, "preview": "signed"},
            )
        return FileAttachment(
            id=attachment_id,
            name=name,
            mime_type=mime_type,
            upload_descriptor=descriptor,
            metadata=metadata,
        )

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        """Remove the bytes; the SDK then deletes the metadata through the Store."""
        await self._blobs.delete(attachment_id, user_id=context.user_id)

    # Uploads ---------------------------------------------------------------------------
    async def upload(self, attachment_id: str, data: bytes, context: RequestContext) -> Attachment:
        """Phase two: the bytes of an attachment made by `attachments.create`."""
        self.require_enabled()
        attachment = await self.owned(attachment_id, context)
        if is_uploaded(attachment):
            raise ConflictError("This attachment has already been uploaded.")
        check_content(
            self.policy.rules,
            mime_type=attachment.mime_type,
            data=data,
            declared_size=declared_size(attachment),
        )
        await self._blobs.put(
            attachment_id, Blob(attachment.mime_type, data), user_id=context.user_id
        )
        uploaded = await self._finished(attachment, data, context)
        await self._store.save_attachment(uploaded, context)
        logger.info("attachment.uploaded", extra={"bytes": len(data), "strategy": "two_phase"})
        return uploaded

    async def upload_direct(
        self, *, name: str, mime_type: str | None, data: bytes, context: RequestContext
    ) -> Attachment:
        """The direct strategy: one request carries the file; answered with the attachment."""
        self.require_enabled()
        name = clean_name(name)
        mime = declared_type(mime_type, name)
        check_content(self.policy.rules, mime_type=mime, data=data, declared_size=None)
        await self._sweep(context.user_id)
        attachment_id = self.generate_attachment_id(mime, context)
        metadata = {"size": len(data), "uploaded": False}
        pending: Attachment = FileAttachment(
            id=attachment_id, name=name, mime_type=mime, metadata=metadata
        )
        await self._store.save_attachment(pending, context)  # the bytes' row refers to it
        try:
            await self._blobs.put(attachment_id, Blob(mime, data), user_id=context.user_id)
            attachment = await self._finished(pending, data, context)
            await self._store.save_attachment(attachment, context)
        except Exception:
            await self._store.delete_attachment(attachment_id, context)
            raise
        logger.info("attachment.uploaded", extra={"bytes": len(data), "strategy": "direct"})
        return attachment

    async def _finished(
        self, attachment: Attachment, data: bytes, context: RequestContext
    ) -> Attachment:
        """The attachment once its bytes are stored: no upload descriptor, a preview if an image."""
        fields: dict[str, Any] = {
            "id": attachment.id,
            "name": attachment.name,
            "mime_type": attachment.mime_type,
            "thread_id": attachment.thread_id,
            "metadata": {**_meta(attachment), "size": len(data), "uploaded": True},
        }
        if not is_image(attachment.mime_type):
            return FileAttachment(**fields)
        if len(data) <= DATA_URL_PREVIEW_MAX_BYTES:
            preview, url = "data", data_url(attachment.mime_type, data)
        else:
            preview = "signed"
            url = await self._previews.url(attachment.id, _base_url(context))
        fields["metadata"]["preview"] = preview
        return ImageAttachment(**fields, preview_url=AnyUrl(url))

    # Reading ---------------------------------------------------------------------------
    async def owned(self, attachment_id: str, context: RequestContext) -> Attachment:
        """The caller's attachment; anyone else's (or none) is a 404."""
        try:
            return await self._store.load_attachment(attachment_id, context)
        except StoreNotFoundError:
            raise NotFoundError("Attachment not found.") from None

    async def content(self, attachment_id: str, context: RequestContext) -> Blob | None:
        """The bytes of the caller's attachment, if they are stored."""
        return await self._blobs.get(attachment_id, user_id=context.user_id)

    async def preview(self, attachment_id: str, *, expires: int, signature: str) -> Blob:
        """An image by a signed link (no bearer: the link is the permission); else a 404."""
        self.require_enabled()
        if "\x00" in attachment_id or not await self._previews.verify(
            attachment_id, expires, signature
        ):
            raise NotFoundError("This preview link is invalid or has expired.")
        blob = await self._blobs.get(attachment_id, user_id=None)
        if blob is None or not is_image(blob.mime_type):
            raise NotFoundError("Attachment not found.")
        return blob

    # Clean-up --------------------------------------------------------------------------
    async def _sweep(self, user_id: str) -> None:
        """Delete the caller's unused uploads, and now and then everyone's."""
        cutoff = utcnow() - UNUSED_UPLOAD_TTL
        everyone = time.monotonic() - self._last_full_sweep >= SWEEP_ALL_EVERY_SECONDS
        if everyone:
            self._last_full_sweep = time.monotonic()
        try:
            removed = await self._store.delete_unused_attachments(
                created_before=cutoff, user_id=None if everyone else user_id
            )
        except Exception as exc:  # clean-up never fails an upload
            logger.warning("attachment.sweep_failed", extra={"error": type(exc).__name__})
            return
        if removed:
            logger.info("attachment.swept", extra={"count": removed, "all_users": everyone})


async def present_attachment(
    previews: PreviewLinks, attachment: Attachment, context: RequestContext
) -> Attachment:
    """The Store's attachment view: a stored signed link may have expired; each read signs anew."""
    if not isinstance(attachment, ImageAttachment) or context.base_url is None:
        return attachment
    if _meta(attachment).get("preview") != "signed":
        return attachment
    url = await previews.url(attachment.id, context.base_url)
    return attachment.model_copy(update={"preview_url": AnyUrl(url)})


def attachments_on_sql(engine: AsyncEngine, settings: Settings) -> tuple[SqlStore, Attachments]:
    """The ChatKit store and the attachments over one database, the bytes in it too."""
    previews = PreviewLinks(partial(load_signing_key, engine, PREVIEW_KEY_NAME))
    store = SqlStore(engine, attachment_view=partial(present_attachment, previews))
    attachments = Attachments(
        store=store,
        blobs=SqlAttachmentBlobs(engine),
        previews=previews,
        policy=attachment_policy(settings),
    )
    return store, attachments


def _base_url(context: RequestContext) -> str:
    if context.base_url is None:
        raise RuntimeError("RequestContext.base_url is needed to link to this server")
    return context.base_url
