"""preflight: what must be refused with a status code before a ChatKit request reaches the SDK.

Over a SQLite store built by the migrations; ownership is decided by the store's queries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from chatkit.types import (
    ActiveStatus,
    AssistantMessageContent,
    AssistantMessageItem,
    ChatKitReq,
    ClientToolCallItem,
    FileAttachment,
    InferenceOptions,
    LockedStatus,
    ThreadMetadata,
    ThreadStatus,
    ToolChoice,
    UserMessageInput,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
)
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine

from app.chat.attachments import MAX_ATTACHMENTS_PER_MESSAGE
from app.chat.preflight import MAX_FEEDBACK_ITEMS, MAX_TITLE_CHARS, input_size, preflight
from app.context import RequestContext
from app.errors import (
    AppError,
    BadRequestError,
    ConflictError,
    FeatureDisabledError,
    NotFoundError,
)
from app.store.chatkit_store import SqlStore, new_id

MAX_CHARS = 100
_requests: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)


def request(op: str, /, **params: Any) -> ChatKitReq:
    """A ChatKit request as the wire carries it, validated by the SDK's own types."""
    return _requests.validate_python({"type": op, "params": params})


def message(
    text: str = "hello", *, attachments: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
        **extra,
    }


def caller(user_id: str) -> RequestContext:
    return RequestContext(user_id=user_id, token="token", request_id=new_id("req"))


@dataclass
class World:
    """Alice's threads, items and attachments, and Bob, who owns none of them (shared by the
    module's tests: preflight only reads, and what a test adds has ids of its own)."""

    store: SqlStore
    alice: RequestContext
    bob: RequestContext
    thread: str
    locked_thread: str
    other_thread: str
    user_item: str
    assistant_item: str
    uploaded: str
    not_uploaded: str
    in_other_thread: str

    async def check(
        self, req: ChatKitReq, as_: RequestContext | None = None, **policy: Any
    ) -> None:
        await preflight(req, self.store, as_ or self.alice, max_message_chars=MAX_CHARS, **policy)

    async def refused(
        self, req: ChatKitReq, as_: RequestContext | None = None, **policy: Any
    ) -> AppError:
        with pytest.raises(AppError) as refused:
            await self.check(req, as_, **policy)
        return refused.value


async def save_thread(
    store: SqlStore, owner: RequestContext, status: ThreadStatus | None = None
) -> str:
    thread = ThreadMetadata(
        id=new_id("thr"), created_at=datetime.now(), status=status or ActiveStatus()
    )
    await store.save_thread(thread, owner)
    return thread.id


async def save_attachment(
    store: SqlStore, owner: RequestContext, *, uploaded: bool, thread_id: str | None = None
) -> str:
    attachment = FileAttachment(
        id=new_id("atc"),
        name="notes.txt",
        mime_type="text/plain",
        thread_id=thread_id,
        metadata={"uploaded": uploaded},
    )
    await store.save_attachment(attachment, owner)
    return attachment.id


@pytest.fixture(scope="module")
async def world(sqlite_engine: AsyncEngine) -> World:
    store = SqlStore(sqlite_engine)
    alice, bob = caller(f"alice-{uuid.uuid4().hex}"), caller(f"bob-{uuid.uuid4().hex}")
    thread = await save_thread(store, alice)
    now = datetime.now()
    user_item = new_id("msg")
    await store.add_thread_item(
        thread,
        UserMessageItem(
            id=user_item,
            thread_id=thread,
            created_at=now,
            content=[UserMessageTextContent(text="hello")],
            inference_options=InferenceOptions(),
        ),
        alice,
    )
    assistant_item = new_id("msg")
    await store.add_thread_item(
        thread,
        AssistantMessageItem(
            id=assistant_item,
            thread_id=thread,
            created_at=now,
            content=[AssistantMessageContent(text="hi")],
        ),
        alice,
    )
    other_thread = await save_thread(store, alice)
    return World(
        store=store,
        alice=alice,
        bob=bob,
        thread=thread,
        locked_thread=await save_thread(store, alice, LockedStatus(reason="archived")),
        other_thread=other_thread,
        user_item=user_item,
        assistant_item=assistant_item,
        uploaded=await save_attachment(store, alice, uploaded=True),
        not_uploaded=await save_attachment(store, alice, uploaded=False),
        in_other_thread=await save_attachment(store, alice, uploaded=True, thread_id=other_thread),
    )


# Every op that names a thread, as Bob would send it about one of Alice's threads.
def ops_on(world: World, thread: str) -> dict[str, ChatKitReq]:
    return {
        "threads.get_by_id": request("threads.get_by_id", thread_id=thread),
        "threads.delete": request("threads.delete", thread_id=thread),
        "threads.update": request("threads.update", thread_id=thread, title="renamed"),
        "items.list": request("items.list", thread_id=thread),
        "items.feedback": request(
            "items.feedback", thread_id=thread, item_ids=[world.assistant_item], kind="positive"
        ),
        "threads.add_user_message": request(
            "threads.add_user_message", thread_id=thread, input=message()
        ),
        "threads.retry_after_item": request(
            "threads.retry_after_item", thread_id=thread, item_id=world.user_item
        ),
        "threads.add_client_tool_output": request(
            "threads.add_client_tool_output", thread_id=thread, result={}
        ),
    }


OPS_ON_A_THREAD = [
    "threads.get_by_id",
    "threads.delete",
    "threads.update",
    "items.list",
    "items.feedback",
    "threads.add_user_message",
    "threads.retry_after_item",
    "threads.add_client_tool_output",
]


@pytest.mark.parametrize("op", OPS_ON_A_THREAD)
async def test_another_users_thread_is_not_found(world: World, op: str) -> None:
    refused = await world.refused(ops_on(world, world.thread)[op], world.bob)
    assert isinstance(refused, NotFoundError) and refused.status_code == 404


@pytest.mark.parametrize("op", OPS_ON_A_THREAD)
async def test_an_unknown_thread_is_not_found(world: World, op: str) -> None:
    refused = await world.refused(ops_on(world, new_id("thr"))[op])
    assert isinstance(refused, NotFoundError)


@pytest.mark.parametrize(
    "op", [op for op in OPS_ON_A_THREAD if op != "threads.add_client_tool_output"]
)
async def test_the_owner_passes(world: World, op: str) -> None:
    await world.check(ops_on(world, world.thread)[op])


@pytest.mark.parametrize(
    "req",
    [
        lambda w: request("threads.add_user_message", thread_id=w.locked_thread, input=message()),
        lambda w: request("threads.retry_after_item", thread_id=w.locked_thread, item_id="x"),
    ],
    ids=["add_user_message", "retry_after_item"],
)
async def test_a_locked_thread_takes_no_new_turn(
    world: World, req: Callable[[World], ChatKitReq]
) -> None:
    refused = await world.refused(req(world))
    assert isinstance(refused, ConflictError) and refused.status_code == 409
    assert "locked" in refused.message


async def test_message_size_counts_tags_quotes_and_options() -> None:
    user_input = UserMessageInput(
        content=[
            UserMessageTextContent(text="abc"),
            UserMessageTagContent(id="task-7", text="Task 7", data={"n": 7}, group="tasks"),
        ],
        attachments=[],
        quoted_text="quoted",
        inference_options=InferenceOptions(model="gpt-x", tool_choice=ToolChoice(id="todo")),
    )
    # abc + "Task 7" + "task-7" + "tasks" + {"n":7} + quoted + gpt-x + todo
    assert input_size(user_input) == 3 + 6 + 6 + 5 + 7 + 6 + 5 + 4


async def test_a_message_of_the_limit_passes_and_one_more_character_is_refused(
    world: World,
) -> None:
    await world.check(request("threads.create", input=message("x" * MAX_CHARS)))
    refused = await world.refused(request("threads.create", input=message("x" * (MAX_CHARS + 1))))
    assert isinstance(refused, BadRequestError) and f"at most {MAX_CHARS}" in refused.message
    # Quoted text counts too, on an existing thread as on a new one.
    quoted = message("x" * 10, quoted_text="q" * MAX_CHARS)
    refused = await world.refused(
        request("threads.add_user_message", thread_id=world.thread, input=quoted)
    )
    assert isinstance(refused, BadRequestError)


async def test_an_empty_message_is_refused_but_a_mention_alone_passes(world: World) -> None:
    refused = await world.refused(request("threads.create", input=message(" \n\t ")))
    assert isinstance(refused, BadRequestError) and "empty" in refused.message
    mention = {
        "content": [{"type": "input_tag", "id": "task-1", "text": "", "data": {}}],
        "attachments": [],
        "inference_options": {},
    }
    await world.check(request("threads.create", input=mention))


async def test_retry_needs_one_of_the_users_messages(world: World) -> None:
    refused = await world.refused(
        request("threads.retry_after_item", thread_id=world.thread, item_id=world.assistant_item)
    )
    assert isinstance(refused, BadRequestError) and refused.status_code == 400
    refused = await world.refused(
        request("threads.retry_after_item", thread_id=world.thread, item_id=new_id("msg"))
    )
    assert isinstance(refused, NotFoundError)


async def test_client_tool_output_needs_a_pending_client_tool_call(world: World) -> None:
    output = request("threads.add_client_tool_output", thread_id=world.thread, result={})
    refused = await world.refused(output)
    assert isinstance(refused, BadRequestError) and "not waiting" in refused.message

    waiting = await save_thread(world.store, world.alice)
    call = ClientToolCallItem(
        id=new_id("ctc"),
        thread_id=waiting,
        created_at=datetime.now(),
        call_id="call_1",
        name="pick_color",
        arguments={},
    )
    await world.store.add_thread_item(waiting, call, world.alice)
    await world.check(
        request("threads.add_client_tool_output", thread_id=waiting, result={"color": "red"})
    )


async def test_titles_and_feedback_have_bounds(world: World) -> None:
    title = "t" * (MAX_TITLE_CHARS + 1)
    refused = await world.refused(request("threads.update", thread_id=world.thread, title=title))
    assert isinstance(refused, BadRequestError)
    for item_ids in ([], [world.assistant_item] * (MAX_FEEDBACK_ITEMS + 1)):
        refused = await world.refused(
            request("items.feedback", thread_id=world.thread, item_ids=item_ids, kind="negative")
        )
        assert isinstance(refused, BadRequestError)


async def test_attachments_of_a_message_must_be_own_uploaded_and_unused(world: World) -> None:
    def create(*attachment_ids: str) -> ChatKitReq:
        return request("threads.create", input=message(attachments=list(attachment_ids)))

    await world.check(create(world.uploaded))
    # Named twice, checked once: still fine.
    await world.check(create(world.uploaded, world.uploaded))

    foreign = await save_attachment(world.store, world.bob, uploaded=True)
    assert isinstance(await world.refused(create(foreign)), NotFoundError)
    assert isinstance(await world.refused(create(new_id("atc"))), NotFoundError)

    refused = await world.refused(create(world.not_uploaded))
    assert isinstance(refused, BadRequestError) and "not finished uploading" in refused.message

    refused = await world.refused(create(world.in_other_thread))
    assert isinstance(refused, BadRequestError) and "another conversation" in refused.message
    # ...but in the thread it belongs to, it may be sent again.
    await world.check(
        request(
            "threads.add_user_message",
            thread_id=world.other_thread,
            input=message(attachments=[world.in_other_thread]),
        )
    )

    too_many = [new_id("atc") for _ in range(MAX_ATTACHMENTS_PER_MESSAGE + 1)]
    refused = await world.refused(create(*too_many))
    assert isinstance(refused, BadRequestError) and "at most" in refused.message


async def test_attachments_switched_off_refuse_every_attachment_op(world: World) -> None:
    ops = [
        request("attachments.create", name="a.txt", size=3, mime_type="text/plain"),
        request("attachments.delete", attachment_id=world.uploaded),
        request("threads.create", input=message(attachments=[world.uploaded])),
    ]
    for req in ops:
        refused = await world.refused(req, attachments_enabled=False)
        assert isinstance(refused, FeatureDisabledError) and refused.status_code == 400
    # A message without attachments is unaffected.
    await world.check(request("threads.create", input=message()), attachments_enabled=False)


async def test_deleting_an_attachment_needs_its_owner(world: World) -> None:
    delete = request("attachments.delete", attachment_id=world.uploaded)
    await world.check(delete)
    assert isinstance(await world.refused(delete, world.bob), NotFoundError)


async def test_dictation_without_a_composer_policy_is_disabled(world: World) -> None:
    transcribe = request("input.transcribe", audio_base64="AAAA", mime_type="audio/webm")
    refused = await world.refused(transcribe)
    assert isinstance(refused, FeatureDisabledError)
