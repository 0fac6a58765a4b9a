"""How attachments reach the model: images as image input, PDFs (and other files) as file input,
text files as text; all inline, as data URLs, so no URL of this server has to be reachable.

Chat Completions mode goes through the agents SDK's converter: images become `image_url` parts
and files `file` parts (`file_data`), which OpenAI accepts; other OpenAI-compatible servers may
refuse either. The bytes are read per turn with the caller's identity; a turn sends at most
`MODEL_ATTACHMENT_BUDGET_BYTES` of them, newest first, and names the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, cast

from agents.items import TResponseInputItem
from chatkit.agents import ThreadItemConverter
from chatkit.types import Attachment, ImageAttachment, ThreadItem, UserMessageItem
from openai.types.responses import ResponseInputContentParam

from app.agent.attachment_notes import attachment_note
from app.chat.attachment_checks import is_image, is_text
from app.chat.attachments import data_url, declared_size
from app.store.attachment_blobs import Blob

# What one turn sends of its history's attachments (about 27 MB once base64-encoded).
MODEL_ATTACHMENT_BUDGET_BYTES = 20 * 1024 * 1024
MAX_TEXT_CHARS = 100_000

AttachmentReader = Callable[[str], Awaitable[Blob | None]]


def _text(text: str) -> ResponseInputContentParam:
    return {"type": "input_text", "text": text}


def model_content(attachment: Attachment, blob: Blob) -> ResponseInputContentParam:
    """One attachment as a Responses API input content part."""
    if is_image(blob.mime_type) and isinstance(attachment, ImageAttachment):
        return {
            "type": "input_image",
            "image_url": data_url(blob.mime_type, blob.data),
            "detail": "auto",
        }
    if is_text(blob.mime_type):
        text = blob.data.decode("utf-8-sig", errors="replace")
        cut = len(text) > MAX_TEXT_CHARS
        body = text[:MAX_TEXT_CHARS] + ("\n[... the rest of the file is left out]" if cut else "")
        return _text(f"Contents of the attached file {attachment.name} ({blob.mime_type}):\n{body}")
    return {
        "type": "input_file",
        "file_data": data_url(blob.mime_type, blob.data),
        "filename": attachment.name,
    }


def budgeted_ids(history: Sequence[ThreadItem], budget: int) -> frozenset[str]:
    """Ids of the attachments whose contents fit in `budget` bytes, newest messages first."""
    chosen: set[str] = set()
    used = 0
    for item in reversed(history):
        if not isinstance(item, UserMessageItem):
            continue
        for attachment in item.attachments:
            size = declared_size(attachment)
            if used + size <= budget:
                chosen.add(attachment.id)
                used += size
    return frozenset(chosen)


class AttachmentConverter(ThreadItemConverter):
    """A ThreadItemConverter that sends attachments; `for_turn` binds it to the caller's bytes."""

    _reader: AttachmentReader | None = None
    _included: frozenset[str] = frozenset()

    def for_turn(self, history: Sequence[ThreadItem], reader: AttachmentReader) -> Self:
        """A copy for one turn: reads the caller's bytes, within the turn's budget."""
        bound = copy.copy(self)
        bound._reader = reader
        bound._included = budgeted_ids(history, MODEL_ATTACHMENT_BUDGET_BYTES)
        return bound

    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        if self._reader is None or attachment.id not in self._included:
            return _text(f"[{attachment.name} was attached; its contents are not included here.]")
        blob = await self._reader(attachment.id)
        if blob is None:
            return _text(f"[{attachment.name} was attached but is no longer available.]")
        return model_content(attachment, blob)

    async def user_message_to_input(
        self, item: UserMessageItem, is_last_message: bool = True
    ) -> TResponseInputItem | list[TResponseInputItem] | None:
        converted = await super().user_message_to_input(item, is_last_message)
        if not item.attachments or not isinstance(converted, list) or not converted:
            return converted
        # The SDK puts the typed text first, then one part per attachment: name them in between.
        message = cast(dict[str, Any], converted[0])
        content = message.get("content")
        if isinstance(content, list):
            note = attachment_note([attachment.name for attachment in item.attachments])
            content.insert(1, _text(note))
        return converted
