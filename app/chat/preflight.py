"""Checks that must answer with a status code before a streaming response starts.

Once the 200 headers of a stream are sent, an error can only become an event or a dropped
connection, so ownership, state and size are checked here first.
"""

from __future__ import annotations

import json
import time

from chatkit.store import NotFoundError as StoreNotFoundError
from chatkit.types import (
    Attachment,
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    ChatKitReq,
    ClientToolCallItem,
    InputTranscribeReq,
    ItemsFeedbackReq,
    ItemsListReq,
    StructuredInputItem,
    ThreadItem,
    ThreadMetadata,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsCustomActionReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsRetryAfterItemReq,
    ThreadsSyncCustomActionReq,
    ThreadsUpdateReq,
    UserMessageInput,
    UserMessageItem,
    UserMessageTagContent,
)

from app.chat.attachments import DISABLED_MESSAGE as ATTACHMENTS_DISABLED
from app.chat.attachments import MAX_ATTACHMENTS_PER_MESSAGE, is_uploaded
from app.chat.composer import (
    DICTATION_DISABLED_MESSAGE,
    ComposerPolicy,
    check_inference_options,
    check_transcription,
)
from app.chat.task_actions import check_task_action
from app.context import RequestContext
from app.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FeatureDisabledError,
    NotFoundError,
)
from app.store.chatkit_store import SqlStore

MAX_TITLE_CHARS = 500
MAX_FEEDBACK_ITEMS = 100


async def preflight(
    request: ChatKitReq,
    store: SqlStore,
    context: RequestContext,
    *,
    max_message_chars: int,
    attachments_enabled: bool = True,
    composer: ComposerPolicy | None = None,
) -> None:
    """Raise an AppError for anything that must not reach `ChatKitServer.process()`."""
    match request:
        case AttachmentsCreateReq() | AttachmentsDeleteReq() if not attachments_enabled:
            raise FeatureDisabledError(ATTACHMENTS_DISABLED)
        case AttachmentsDeleteReq():
            await _owned_attachment(store, request.params.attachment_id, context)
        case InputTranscribeReq():
            if composer is None:
                raise FeatureDisabledError(DICTATION_DISABLED_MESSAGE)
            check_transcription(request.params, composer)
        case ThreadsCustomActionReq() | ThreadsSyncCustomActionReq():
            # Task widget buttons: the caller's own widget item, a known action, a listed task.
            await _owned_thread(store, request.params.thread_id, context)
            item_id = request.params.item_id
            item = (
                await _owned_item(store, request.params.thread_id, item_id, context)
                if item_id
                else None
            )
            check_task_action(item, request.params.action)
            if context.expires_at is not None and context.expires_at <= time.time():
                raise AuthenticationError(
                    "Your session has expired; sign in again.", reason="expired"
                )
        case ThreadsCreateReq():
            _check_input(request.params.input, max_message_chars)
            if composer is not None:
                check_inference_options(request.params.input.inference_options, composer)
            await _check_attachments(
                request.params.input, store, context, None, attachments_enabled
            )
        case ThreadsAddUserMessageReq():
            _check_input(request.params.input, max_message_chars)
            if composer is not None:
                check_inference_options(request.params.input.inference_options, composer)
            thread = await _owned_thread(store, request.params.thread_id, context)
            if thread.status.type != "active":
                raise ConflictError(
                    f"This thread is {thread.status.type}: it takes no new messages."
                )
            await _check_attachments(
                request.params.input, store, context, thread.id, attachments_enabled
            )
        case ThreadsRetryAfterItemReq():
            thread = await _owned_thread(store, request.params.thread_id, context)
            if thread.status.type != "active":
                raise ConflictError(f"This thread is {thread.status.type}: it cannot be retried.")
            item = await _owned_item(
                store, request.params.thread_id, request.params.item_id, context
            )
            if not isinstance(item, UserMessageItem):
                raise BadRequestError("Retry needs the id of one of your messages in this thread.")
        case ThreadsAddStructuredInputReq():
            await _owned_thread(store, request.params.thread_id, context)
            item = await _owned_item(
                store, request.params.thread_id, request.params.item_id, context
            )
            if not isinstance(item, StructuredInputItem) or item.status != "pending":
                raise BadRequestError("That item is not a pending structured input request.")
        case ThreadsAddClientToolOutputReq():
            await _owned_thread(store, request.params.thread_id, context)
            page = await store.load_thread_items(request.params.thread_id, None, 1, "desc", context)
            last = page.data[0] if page.data else None
            if not isinstance(last, ClientToolCallItem) or last.status != "pending":
                raise BadRequestError("This thread is not waiting for a client tool result.")
        case ThreadsUpdateReq():
            await _owned_thread(store, request.params.thread_id, context)
            if len(request.params.title) > MAX_TITLE_CHARS:
                raise BadRequestError(f"A title has at most {MAX_TITLE_CHARS} characters.")
        case ItemsFeedbackReq():
            if not 1 <= len(request.params.item_ids) <= MAX_FEEDBACK_ITEMS:
                raise BadRequestError(f"Give 1 to {MAX_FEEDBACK_ITEMS} item ids.")
            await _owned_thread(store, request.params.thread_id, context)
        case ThreadsGetByIdReq() | ThreadsDeleteReq() | ItemsListReq():
            await _owned_thread(store, request.params.thread_id, context)
        case _:
            pass


async def _owned_thread(store: SqlStore, thread_id: str, context: RequestContext) -> ThreadMetadata:
    try:
        return await store.load_thread(thread_id, context)
    except StoreNotFoundError:
        raise NotFoundError("Thread not found.") from None


async def _owned_item(
    store: SqlStore, thread_id: str, item_id: str, context: RequestContext
) -> ThreadItem:
    try:
        return await store.load_item(thread_id, item_id, context)
    except StoreNotFoundError:
        raise NotFoundError("Item not found.") from None


def input_size(user_input: UserMessageInput) -> int:
    """Characters the user supplied in a message, all of which are stored and resent as history:
    texts, quoted text, every field of a tag (its data as compact JSON) and inference options."""
    size = len(user_input.quoted_text or "")
    for part in user_input.content:
        size += len(part.text)
        if isinstance(part, UserMessageTagContent):
            size += len(part.id) + len(part.group or "")
            if part.data:
                size += len(json.dumps(part.data, ensure_ascii=False, separators=(",", ":")))
    options = user_input.inference_options
    size += len(options.model or "")
    if options.tool_choice is not None:
        size += len(options.tool_choice.id)
    return size


async def _owned_attachment(
    store: SqlStore, attachment_id: str, context: RequestContext
) -> Attachment:
    try:
        return await store.load_attachment(attachment_id, context)
    except StoreNotFoundError:
        raise NotFoundError("Attachment not found.") from None


async def _check_attachments(
    user_input: UserMessageInput,
    store: SqlStore,
    context: RequestContext,
    thread_id: str | None,
    enabled: bool,
) -> None:
    """Each attachment of a message is the caller's (404 otherwise), uploaded, and new here."""
    if not user_input.attachments:
        return
    if not enabled:
        raise FeatureDisabledError(ATTACHMENTS_DISABLED)
    if len(user_input.attachments) > MAX_ATTACHMENTS_PER_MESSAGE:
        raise BadRequestError(
            f"A message can carry at most {MAX_ATTACHMENTS_PER_MESSAGE} attachments."
        )
    for attachment_id in dict.fromkeys(user_input.attachments):
        attachment = await _owned_attachment(store, attachment_id, context)
        if not is_uploaded(attachment):
            raise BadRequestError(f"{attachment.name} has not finished uploading.")
        if attachment.thread_id is not None and attachment.thread_id != thread_id:
            raise BadRequestError(f"{attachment.name} belongs to another conversation.")


def _check_input(user_input: UserMessageInput, max_chars: int) -> None:
    if input_size(user_input) > max_chars:
        raise BadRequestError(
            f"The message is too long: at most {max_chars} characters, tags and options included."
        )
    if not user_input.attachments and not any(
        # A message may be only a mention (an input_tag) of a task.
        isinstance(part, UserMessageTagContent) or part.text.strip()
        for part in user_input.content
    ):
        raise BadRequestError("The message is empty.")
