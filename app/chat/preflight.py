"""Checks that must answer with a status code before a streaming response starts.

Once the 200 headers of a stream are sent, an error can only become an event or a dropped
connection, so ownership, state and size are checked here first.
"""

from __future__ import annotations

from chatkit.store import NotFoundError as StoreNotFoundError
from chatkit.types import (
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
    UserMessageTextContent,
)

from app.context import RequestContext
from app.errors import BadRequestError, ConflictError, FeatureDisabledError, NotFoundError
from app.store.chatkit_store import SqlStore

MAX_TITLE_CHARS = 500
MAX_FEEDBACK_ITEMS = 100


async def preflight(
    request: ChatKitReq, store: SqlStore, context: RequestContext, *, max_message_chars: int
) -> None:
    """Raise an AppError for anything that must not reach `ChatKitServer.process()`."""
    match request:
        case AttachmentsCreateReq() | AttachmentsDeleteReq():
            raise FeatureDisabledError("Attachments are not enabled on this server.")
        case InputTranscribeReq():
            raise FeatureDisabledError(
                "Dictation (input.transcribe) is not enabled on this server."
            )
        case ThreadsCustomActionReq() | ThreadsSyncCustomActionReq():
            await _owned_thread(store, request.params.thread_id, context)
            raise FeatureDisabledError("Custom actions are not enabled on this server.")
        case ThreadsCreateReq():
            _check_input(request.params.input, max_message_chars)
        case ThreadsAddUserMessageReq():
            _check_input(request.params.input, max_message_chars)
            thread = await _owned_thread(store, request.params.thread_id, context)
            if thread.status.type != "active":
                raise ConflictError(
                    f"This thread is {thread.status.type}: it takes no new messages."
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


def _check_input(user_input: UserMessageInput, max_chars: int) -> None:
    if user_input.attachments:
        raise FeatureDisabledError("Attachments are not enabled on this server.")
    length = 0
    for part in user_input.content:
        if isinstance(part, UserMessageTextContent | UserMessageTagContent):
            length += len(part.text)
    length += len(user_input.quoted_text or "")
    if length > max_chars:
        raise BadRequestError(f"The message is too long: at most {max_chars} characters.")
    if length == 0 or not any(
        isinstance(part, UserMessageTextContent) and part.text.strip()
        for part in user_input.content
    ):
        raise BadRequestError("The message is empty.")
