"""User B, holding user A's ids, can neither read nor change anything of A's.

Table-driven: every ChatKit op that names a thread, item or attachment is sent by B with A's ids
over real HTTP (and every store method is called as B with A's ids). Each case must answer with
a JSON error (404, or 400 for disabled features), start no stream, reveal none of A's texts, and
leave every row of A byte-for-byte as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from chatkit.store import NotFoundError as StoreNotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ClientToolCallItem,
    FileAttachment,
    InferenceOptions,
    StructuredInputFreeform,
    StructuredInputItem,
    ThreadItem,
    UserMessageItem,
    UserMessageTextContent,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from app.context import RequestContext
from app.store.chatkit_store import SqlStore, new_id
from app.store.tasks import TaskNotFound, TaskRepository
from tests.e2e.harness import ChatKitClient, InProcessServer, text_input
from tests.security.checks import RowSnapshot, assert_json_error, count_rows, snapshot_rows


@dataclass
class World:
    """A's data (one thread with two turns, feedback, a task, pending items, an attachment)."""

    secret: str
    a_user: str
    b_user: str
    a_client: ChatKitClient
    b_client: ChatKitClient
    a_thread: str
    a_user_message: str
    a_assistant_message: str
    a_structured_input: str
    a_client_tool_call: str
    a_attachment: str
    a_task_id: int
    b_thread: str
    b_user_message: str
    initial: RowSnapshot

    async def snapshot(self, engine: AsyncEngine) -> RowSnapshot:
        """Every row of A, and every row of anyone inside A's thread."""
        return await snapshot_rows(engine, self.a_user, [self.a_thread])


def context_of(user_id: str) -> RequestContext:
    return RequestContext(user_id=user_id, token="-", request_id="isolation-test")


async def item_ids(client: ChatKitClient, thread_id: str) -> list[dict[str, Any]]:
    page = await client.call("items.list", {"thread_id": thread_id, "limit": 100, "order": "asc"})
    return list(page["data"])


@pytest.fixture(scope="module")
async def world(
    offline_server: InProcessServer, minter: SharedSecretVerifier, pg_engine: AsyncEngine
) -> AsyncIterator[World]:
    marker = uuid.uuid4().hex[:12]
    secret = f"secret-A-{marker}"
    a_user, b_user = f"user-a-{marker}", f"user-b-{marker}"
    a_client = ChatKitClient(offline_server.base_url, minter.mint(a_user))
    b_client = ChatKitClient(offline_server.base_url, minter.mint(b_user))
    try:
        added = await a_client.send(f"add task {secret}")
        assert added.status == 200 and "Added task" in added.assistant_text(), added.raw
        a_thread = added.thread_id
        listed = await a_client.send("list tasks", a_thread)
        assert secret in listed.assistant_text(), listed.raw
        items = await item_ids(a_client, a_thread)
        user_message = next(i["id"] for i in items if i["type"] == "user_message")
        assistant_message = next(i["id"] for i in items if i["type"] == "assistant_message")
        feedback = {"thread_id": a_thread, "item_ids": [assistant_message], "kind": "positive"}
        assert await a_client.call("items.feedback", feedback) == {}
        async with pg_engine.connect() as conn:
            task_id = await conn.scalar(
                text("select id from todo_tasks where user_id = :u"), {"u": a_user}
            )
        assert isinstance(task_id, int)

        # Items a client can answer (a pending structured input, a pending client tool call,
        # last) and an attachment: so the ops that act on them would succeed for their owner.
        store, context = SqlStore(pg_engine), context_of(a_user)
        question = StructuredInputItem(
            id=new_id("si"),
            thread_id=a_thread,
            created_at=datetime.now(),
            inputs=[StructuredInputFreeform(id="q", question=f"{secret} question?")],
        )
        await store.add_thread_item(a_thread, question, context)
        tool_call = ClientToolCallItem(
            id=new_id("tc"),
            thread_id=a_thread,
            created_at=datetime.now(),
            call_id=f"call_{marker}",
            name="get_location",
            arguments={"hint": secret},
        )
        await store.add_thread_item(a_thread, tool_call, context)
        uploaded = await a_client.http.post(
            "/api/chatkit/upload",
            files={"file": (f"{secret}.txt", secret.encode(), "text/plain")},
            headers={"Authorization": f"Bearer {a_client.token}"},
        )
        assert uploaded.status_code == 200, uploaded.text
        attachment = FileAttachment.model_validate(uploaded.json())

        b_started = await b_client.send("hello from b")
        assert b_started.status == 200, b_started.raw
        b_thread = b_started.thread_id
        b_message = (await item_ids(b_client, b_thread))[0]["id"]

        world = World(
            secret=secret,
            a_user=a_user,
            b_user=b_user,
            a_client=a_client,
            b_client=b_client,
            a_thread=a_thread,
            a_user_message=user_message,
            a_assistant_message=assistant_message,
            a_structured_input=question.id,
            a_client_tool_call=tool_call.id,
            a_attachment=attachment.id,
            a_task_id=task_id,
            b_thread=b_thread,
            b_user_message=b_message,
            initial={},
        )
        world.initial = await world.snapshot(pg_engine)
        assert [len(world.initial[t]) for t in ("chat_threads", "chat_feedback")] == [1, 1]
        assert len(world.initial["todo_tasks"]) == 1
        assert len(world.initial["chat_attachments"]) == 1
        assert len(world.initial["chat_attachment_blobs"]) == 1
        assert len(world.initial["chat_items"]) >= 6
        yield world
    finally:
        await a_client.aclose()
        await b_client.aclose()


# -- the HTTP matrix ------------------------------------------------------------------------

Params = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    """One request B sends with A's ids, and the answers it may get."""

    name: str
    op: str
    params: Params
    statuses: frozenset[int] = frozenset({404})
    error_type: str | None = "not_found"


def _input_naming(attachment: str) -> dict[str, Any]:
    return {**text_input("see this file"), "attachments": [attachment]}


_ANSWER = {"status": "answered", "answers": {"q": {"values": ["pwned"]}}}
_ACTION = {"type": "pwn", "payload": {"x": 1}}

HTTP_CASES = [
    Case("get_by_id", "threads.get_by_id", lambda w: {"thread_id": w.a_thread}),
    Case("items.list", "items.list", lambda w: {"thread_id": w.a_thread, "limit": 100}),
    Case(
        "items.list.after_own_item",
        "items.list",
        lambda w: {"thread_id": w.a_thread, "after": w.a_user_message, "order": "asc"},
    ),
    Case(
        "items.list.own_thread_foreign_cursor",
        "items.list",
        lambda w: {"thread_id": w.b_thread, "after": w.a_user_message},
    ),
    Case("threads.list.foreign_cursor", "threads.list", lambda w: {"after": w.a_thread}),
    Case("update", "threads.update", lambda w: {"thread_id": w.a_thread, "title": "pwned"}),
    Case("delete", "threads.delete", lambda w: {"thread_id": w.a_thread}),
    Case(
        "add_user_message",
        "threads.add_user_message",
        lambda w: {"thread_id": w.a_thread, "input": text_input("pwned")},
    ),
    Case(
        "retry_after_item",
        "threads.retry_after_item",
        lambda w: {"thread_id": w.a_thread, "item_id": w.a_user_message},
    ),
    Case(
        "retry_after_item.own_thread",
        "threads.retry_after_item",
        lambda w: {"thread_id": w.b_thread, "item_id": w.a_user_message},
    ),
    Case(
        "feedback",
        "items.feedback",
        lambda w: {
            "thread_id": w.a_thread,
            "item_ids": [w.a_assistant_message],
            "kind": "negative",
        },
    ),
    Case(
        "feedback.no_items",
        "items.feedback",
        lambda w: {"thread_id": w.a_thread, "item_ids": [], "kind": "negative"},
        frozenset({400, 404}),  # an empty vote may be refused before ownership is looked at
        None,
    ),
    Case(
        "feedback.own_thread",
        "items.feedback",
        lambda w: {
            "thread_id": w.b_thread,
            "item_ids": [w.a_assistant_message],
            "kind": "negative",
        },
    ),
    Case(
        "feedback.mixed_items",
        "items.feedback",
        lambda w: {
            "thread_id": w.b_thread,
            "item_ids": [w.b_user_message, w.a_assistant_message],
            "kind": "negative",
        },
    ),
    Case(
        "client_tool_output",
        "threads.add_client_tool_output",
        lambda w: {"thread_id": w.a_thread, "result": {"city": "pwned"}},
    ),
    Case(
        "structured_input",
        "threads.add_structured_input",
        lambda w: {"thread_id": w.a_thread, "item_id": w.a_structured_input, "input": _ANSWER},
    ),
    Case(
        "structured_input.own_thread",
        "threads.add_structured_input",
        lambda w: {"thread_id": w.b_thread, "item_id": w.a_structured_input, "input": _ANSWER},
    ),
    Case(
        "custom_action",
        "threads.custom_action",
        lambda w: {"thread_id": w.a_thread, "item_id": w.a_assistant_message, "action": _ACTION},
    ),
    Case(
        "sync_custom_action",
        "threads.sync_custom_action",
        lambda w: {"thread_id": w.a_thread, "item_id": w.a_assistant_message, "action": _ACTION},
    ),
    Case(
        "custom_action.own_thread",
        "threads.custom_action",
        lambda w: {"thread_id": w.b_thread, "item_id": w.a_assistant_message, "action": _ACTION},
    ),
    Case("attachments.delete", "attachments.delete", lambda w: {"attachment_id": w.a_attachment}),
    Case(
        "create_naming_attachment",
        "threads.create",
        lambda w: {"input": _input_naming(w.a_attachment)},
    ),
    Case(
        "add_user_message_naming_attachment.own_thread",
        "threads.add_user_message",
        lambda w: {"thread_id": w.b_thread, "input": _input_naming(w.a_attachment)},
    ),
    Case(
        "add_user_message_naming_attachment",
        "threads.add_user_message",
        lambda w: {"thread_id": w.a_thread, "input": _input_naming(w.a_attachment)},
    ),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[case.name for case in HTTP_CASES])
async def test_foreign_ids_over_http(case: Case, world: World, pg_engine: AsyncEngine) -> None:
    before = await world.snapshot(pg_engine)
    b_rows = await count_rows(pg_engine, world.b_user)

    response = await world.b_client.request(case.op, case.params(world))

    body = assert_json_error(response, case.statuses)  # JSON, so no stream was started
    if case.error_type is not None:
        assert body["type"] == case.error_type, body
    assert world.secret not in response.text
    assert await world.snapshot(pg_engine) == before
    assert await count_rows(pg_engine, world.b_user) == b_rows


async def test_foreign_thread_is_not_listed(world: World) -> None:
    listed = await world.b_client.call("threads.list", {"limit": 100})
    assert [thread["id"] for thread in listed["data"]] == [world.b_thread]
    assert world.secret not in str(listed)


# -- tasks through the MCP server -------------------------------------------------------------

TASK_COMMANDS = [
    "complete task {id}",
    "update task {id} to pwned",
    "delete task {id}",
    "list tasks",
]


@pytest.mark.parametrize("command", TASK_COMMANDS, ids=lambda c: c.split()[0])
async def test_foreign_task_through_the_model(
    command: str, world: World, pg_engine: AsyncEngine
) -> None:
    before = await world.snapshot(pg_engine)
    result = await world.b_client.send(command.format(id=world.a_task_id), world.b_thread)

    assert result.status == 200 and not result.of_type("error"), result.raw
    answer = result.assistant_text()
    assert world.secret not in str(result.raw)
    if "{id}" in command:
        assert f"Task {world.a_task_id} not found" in answer, answer
    else:
        assert answer == "You have no tasks.", answer
    assert await world.snapshot(pg_engine) == before


# -- the store, method by method --------------------------------------------------------------


@dataclass(frozen=True)
class Seams:
    """What a store case calls, as B."""

    store: SqlStore
    tasks: TaskRepository
    context: RequestContext

    @property
    def user_id(self) -> str:
        return self.context.user_id


@dataclass(frozen=True)
class StoreCase:
    """One store call as B with A's ids; `check` sees its result unless it must raise."""

    name: str
    call: Callable[[Seams, World], Awaitable[Any]]
    raises: type[Exception] | None = StoreNotFoundError
    check: Callable[[Any, World], bool] | None = None


def _forged_message(w: World) -> ThreadItem:
    return UserMessageItem(
        id=w.a_user_message,
        thread_id=w.a_thread,
        created_at=datetime.now(),
        content=[UserMessageTextContent(text="pwned")],
        inference_options=InferenceOptions(),
    )


def _forged_answer(w: World) -> ThreadItem:
    return AssistantMessageItem(
        id=new_id("msg"),
        thread_id=w.a_thread,
        created_at=datetime.now(),
        content=[AssistantMessageContent(text="pwned")],
    )


async def _rename_foreign_thread(b: Seams, w: World) -> None:
    thread = await b.store.load_thread(w.a_thread, context_of(w.a_user))
    thread.title = "pwned"
    await b.store.save_thread(thread, b.context)


async def _rename_foreign_attachment(b: Seams, w: World) -> None:
    attachment = await b.store.load_attachment(w.a_attachment, context_of(w.a_user))
    await b.store.save_attachment(attachment.model_copy(update={"name": "pwned"}), b.context)


async def _list_tasks(b: Seams, w: World) -> list[Any]:
    return list(await b.tasks.list(user_id=b.user_id))


STORE_CASES = [
    StoreCase("load_thread", lambda b, w: b.store.load_thread(w.a_thread, b.context)),
    StoreCase("save_thread", _rename_foreign_thread),
    StoreCase("delete_thread", lambda b, w: b.store.delete_thread(w.a_thread, b.context)),
    StoreCase(
        "load_threads",
        lambda b, w: b.store.load_threads(100, None, "desc", b.context),
        None,
        lambda page, w: [t.id for t in page.data] == [w.b_thread],
    ),
    StoreCase(
        "load_threads.after",
        lambda b, w: b.store.load_threads(100, w.a_thread, "asc", b.context),
    ),
    StoreCase(
        "load_thread_items",
        lambda b, w: b.store.load_thread_items(w.a_thread, None, 100, "asc", b.context),
        None,
        lambda page, w: page.data == [] and not page.has_more,
    ),
    StoreCase(
        "load_thread_items.after",
        lambda b, w: b.store.load_thread_items(w.b_thread, w.a_user_message, 100, "asc", b.context),
    ),
    StoreCase("load_item", lambda b, w: b.store.load_item(w.a_thread, w.a_user_message, b.context)),
    StoreCase(
        "add_thread_item.new",
        lambda b, w: b.store.add_thread_item(w.a_thread, _forged_answer(w), b.context),
    ),
    StoreCase(
        "add_thread_item.same_id",
        lambda b, w: b.store.add_thread_item(w.a_thread, _forged_message(w), b.context),
    ),
    StoreCase(
        "save_item", lambda b, w: b.store.save_item(w.a_thread, _forged_message(w), b.context)
    ),
    StoreCase(
        "delete_thread_item",
        lambda b, w: b.store.delete_thread_item(w.a_thread, w.a_user_message, b.context),
        None,
    ),
    StoreCase(
        "save_feedback",
        lambda b, w: b.store.save_feedback(
            w.a_thread, [w.a_assistant_message], "negative", b.context
        ),
    ),
    StoreCase(
        "save_feedback.no_items",
        lambda b, w: b.store.save_feedback(w.a_thread, [], "negative", b.context),
    ),
    StoreCase(
        "save_feedback.own_thread",
        lambda b, w: b.store.save_feedback(
            w.b_thread, [w.a_assistant_message], "negative", b.context
        ),
    ),
    StoreCase("load_attachment", lambda b, w: b.store.load_attachment(w.a_attachment, b.context)),
    StoreCase("save_attachment", _rename_foreign_attachment),
    StoreCase(
        "delete_attachment", lambda b, w: b.store.delete_attachment(w.a_attachment, b.context)
    ),
    StoreCase("tasks.list", _list_tasks, None, lambda tasks, w: tasks == []),
    StoreCase(
        "tasks.complete",
        lambda b, w: b.tasks.complete(user_id=b.user_id, task_id=w.a_task_id),
        TaskNotFound,
    ),
    StoreCase(
        "tasks.update",
        lambda b, w: b.tasks.update(user_id=b.user_id, task_id=w.a_task_id, title="pwned"),
        TaskNotFound,
    ),
    StoreCase(
        "tasks.delete",
        lambda b, w: b.tasks.delete(user_id=b.user_id, task_id=w.a_task_id),
        TaskNotFound,
    ),
]


@pytest.mark.parametrize("case", STORE_CASES, ids=[case.name for case in STORE_CASES])
async def test_foreign_ids_in_the_store(
    case: StoreCase, world: World, pg_engine: AsyncEngine
) -> None:
    b = Seams(
        store=SqlStore(pg_engine),
        tasks=TaskRepository(pg_engine),
        context=context_of(world.b_user),
    )
    before = await world.snapshot(pg_engine)
    if case.raises is not None:
        with pytest.raises(case.raises):
            await case.call(b, world)
    else:
        result = await case.call(b, world)
        if case.check is not None:
            assert case.check(result, world), result
    assert await world.snapshot(pg_engine) == before


# -- afterwards --------------------------------------------------------------------------------


async def test_zz_owner_data_is_unchanged_after_the_matrix(
    world: World, pg_engine: AsyncEngine
) -> None:
    """Runs last in this module: A's rows are exactly those before any case ran."""
    assert await world.snapshot(pg_engine) == world.initial
    thread = await world.a_client.call("threads.get_by_id", {"thread_id": world.a_thread})
    assert world.secret in (thread["title"] or "")
    listed = await world.a_client.send("list tasks", None)
    assert world.secret in listed.assistant_text()
