"""The Store contract, on Postgres and on SQLite."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    InferenceOptions,
    LockedStatus,
    Page,
    SDKHiddenContextItem,
    Thread,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from app.context import RequestContext
from app.store.chatkit_store import MAX_PAGE_SIZE, SqlStore
from tests.store.rows import count_items, feedback_of

BASE = datetime(2026, 1, 1, 12, 0, 0)


def thread(store: SqlStore, ctx: RequestContext, **fields: object) -> ThreadMetadata:
    return ThreadMetadata(id=store.generate_thread_id(ctx), created_at=BASE, **fields)


def user_message(thread_id: str, text: str, at: datetime, item_id: str) -> UserMessageItem:
    return UserMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=at,
        content=[UserMessageTextContent(text=text)],
        attachments=[],
        inference_options=InferenceOptions(),
    )


def assistant(thread_id: str, text: str, at: datetime, item_id: str) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=at,
        content=[AssistantMessageContent(text=text, annotations=[])],
    )


async def saved_thread(store: SqlStore, ctx: RequestContext) -> ThreadMetadata:
    meta = thread(store, ctx, title="first")
    await store.save_thread(meta, ctx)
    return meta


async def add_items(
    store: SqlStore, ctx: RequestContext, thread_id: str, count: int, same_time: bool = False
) -> list[str]:
    ids = []
    for index in range(count):
        at = BASE if same_time else BASE + timedelta(seconds=index)
        item_id = store.generate_item_id(
            "message", ThreadMetadata(id=thread_id, created_at=BASE), ctx
        )
        await store.add_thread_item(
            thread_id, user_message(thread_id, f"m{index}", at, item_id), ctx
        )
        ids.append(item_id)
    return ids


async def collect(
    store: SqlStore, ctx: RequestContext, thread_id: str, order: str, limit: int
) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page: Page[ThreadItem] = await store.load_thread_items(thread_id, after, limit, order, ctx)
        assert len(page.data) <= limit
        seen.extend(item.id for item in page.data)
        if not page.has_more:
            assert page.after is None
            return seen
        assert page.after == page.data[-1].id
        after = page.after


async def test_thread_round_trip_keeps_naive_datetime_and_fields(
    store: SqlStore, alice: RequestContext
) -> None:
    meta = thread(
        store, alice, title="Groceries", metadata={"k": "v"}, status=LockedStatus(reason="x")
    )
    await store.save_thread(meta, alice)
    loaded = await store.load_thread(meta.id, alice)
    assert loaded == meta
    assert loaded.created_at.tzinfo is None
    # The SDK subtracts naive datetime.now() from stored values: that must not raise.
    assert datetime.now() - loaded.created_at > timedelta(0)


async def test_save_thread_updates_title_and_never_stores_items(
    store: SqlStore, alice: RequestContext
) -> None:
    meta = await saved_thread(store, alice)
    item = user_message(meta.id, "hi", BASE, "msg_carried")
    full = Thread(**meta.model_dump(), items=Page(data=[item]))
    full.title = "renamed"
    await store.save_thread(full, alice)
    assert (await store.load_thread(meta.id, alice)).title == "renamed"
    assert (await store.load_thread_items(meta.id, None, 10, "asc", alice)).data == []


async def test_ids_are_long_and_unique(store: SqlStore, alice: RequestContext) -> None:
    meta = ThreadMetadata(id="thr_x", created_at=BASE)
    ids = {store.generate_item_id("message", meta, alice) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(item_id) >= 32 for item_id in ids)
    assert len(store.generate_thread_id(alice)) >= 32


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("same_time", [False, True], ids=["distinct", "ties"])
async def test_items_pagination(
    store: SqlStore, alice: RequestContext, order: str, same_time: bool
) -> None:
    meta = await saved_thread(store, alice)
    ids = await add_items(store, alice, meta.id, 7, same_time=same_time)
    expected = ids if order == "asc" else list(reversed(ids))
    for limit in (1, 2, 3, 7, 50):
        assert await collect(store, alice, meta.id, order, limit) == expected


async def test_items_after_is_exclusive(store: SqlStore, alice: RequestContext) -> None:
    meta = await saved_thread(store, alice)
    ids = await add_items(store, alice, meta.id, 5)
    page = await store.load_thread_items(meta.id, ids[1], 2, "asc", alice)
    assert [item.id for item in page.data] == ids[2:4]
    assert page.has_more and page.after == ids[3]
    page = await store.load_thread_items(meta.id, ids[3], 10, "desc", alice)
    assert [item.id for item in page.data] == [ids[2], ids[1], ids[0]]
    assert not page.has_more and page.after is None


async def test_limit_is_clamped(store: SqlStore, alice: RequestContext) -> None:
    meta = await saved_thread(store, alice)
    await add_items(store, alice, meta.id, MAX_PAGE_SIZE + 5, same_time=True)
    page = await store.load_thread_items(meta.id, None, 10_000_000, "asc", alice)
    assert len(page.data) == MAX_PAGE_SIZE and page.has_more
    page = await store.load_thread_items(meta.id, None, 0, "asc", alice)
    assert len(page.data) == 1


async def test_upsert_same_item_twice_replaces_in_place(
    store: SqlStore, alice: RequestContext
) -> None:
    meta = await saved_thread(store, alice)
    first, second = await add_items(store, alice, meta.id, 2)
    replaced = assistant(meta.id, "new text", BASE + timedelta(hours=5), first)
    await store.add_thread_item(meta.id, replaced, alice)
    await store.save_item(meta.id, replaced, alice)
    page = await store.load_thread_items(meta.id, None, 10, "asc", alice)
    assert [item.id for item in page.data] == [first, second]  # position kept
    loaded = await store.load_item(meta.id, first, alice)
    assert isinstance(loaded, AssistantMessageItem) and loaded.content[0].text == "new text"


async def test_hidden_items_are_stored(store: SqlStore, alice: RequestContext) -> None:
    meta = await saved_thread(store, alice)
    hidden = SDKHiddenContextItem(id="shcx_1", thread_id=meta.id, created_at=BASE, content="stop")
    await store.add_thread_item(meta.id, hidden, alice)
    assert await store.load_item(meta.id, "shcx_1", alice) == hidden


async def test_nul_and_unicode_text_survive(store: SqlStore, alice: RequestContext) -> None:
    meta = await saved_thread(store, alice)
    text = "a\x00b \u2603 \U0001f600 'quote' \"dq\" \\ end"
    await store.add_thread_item(meta.id, user_message(meta.id, text, BASE, "msg_nul"), alice)
    loaded = await store.load_item(meta.id, "msg_nul", alice)
    assert isinstance(loaded, UserMessageItem)
    assert loaded.content[0].text == text
    meta.title = "t\x00itle"
    await store.save_thread(meta, alice)
    assert (await store.load_thread(meta.id, alice)).title == "t\x00itle"


async def test_delete_item_and_thread_cascade(
    store: SqlStore, store_engine: AsyncEngine, alice: RequestContext
) -> None:
    meta = await saved_thread(store, alice)
    ids = await add_items(store, alice, meta.id, 3)
    await store.delete_thread_item(meta.id, ids[0], alice)
    with pytest.raises(NotFoundError):
        await store.load_item(meta.id, ids[0], alice)
    await store.save_feedback(meta.id, [ids[1]], "positive", alice)
    await store.delete_thread(meta.id, alice)
    with pytest.raises(NotFoundError):
        await store.load_thread(meta.id, alice)
    assert await count_items(store_engine, meta.id, alice.user_id) == 0
    with pytest.raises(NotFoundError):
        await store.load_item(meta.id, ids[1], alice)
    assert await feedback_of(store_engine, meta.id, alice.user_id) == {}


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_threads_pagination_per_user(
    store: SqlStore, alice: RequestContext, bob: RequestContext, order: str
) -> None:
    ids = []
    for index in range(5):
        meta = ThreadMetadata(
            id=store.generate_thread_id(alice), created_at=BASE + timedelta(seconds=index % 2)
        )
        await store.save_thread(meta, alice)
        ids.append(meta.id)
    await store.save_thread(thread(store, bob), bob)
    # created_at has ties (index % 2): the sequence breaks them in insertion order.
    expected_asc = [ids[0], ids[2], ids[4], ids[1], ids[3]]
    expected = expected_asc if order == "asc" else list(reversed(expected_asc))
    seen: list[str] = []
    after = None
    while True:
        page = await store.load_threads(2, after, order, alice)
        seen.extend(t.id for t in page.data)
        if not page.has_more:
            break
        after = page.after
    assert seen == expected


async def test_unknown_ids_raise_not_found(store: SqlStore, alice: RequestContext) -> None:
    meta = await saved_thread(store, alice)
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_unknown", alice)
    with pytest.raises(NotFoundError):
        await store.load_item(meta.id, "msg_unknown", alice)
    with pytest.raises(NotFoundError):
        await store.load_attachment("atc_unknown", alice)
    with pytest.raises(NotFoundError):
        await store.delete_thread("thr_unknown", alice)
    with pytest.raises(NotFoundError):
        await store.load_thread_items(meta.id, "msg_unknown", 10, "asc", alice)
    with pytest.raises(NotFoundError):
        await store.add_thread_item(
            "thr_unknown", user_message("thr_unknown", "x", BASE, "msg_x"), alice
        )


async def test_isolation_between_users(
    store: SqlStore, alice: RequestContext, bob: RequestContext
) -> None:
    meta = await saved_thread(store, alice)
    ids = await add_items(store, alice, meta.id, 2)
    attachment = FileAttachment(
        id="atc_" + meta.id, name="a.txt", mime_type="text/plain", thread_id=meta.id
    )
    await store.save_attachment(attachment, alice)
    before_thread = await store.load_thread(meta.id, alice)
    before_items = await store.load_thread_items(meta.id, None, 10, "asc", alice)

    with pytest.raises(NotFoundError):
        await store.load_thread(meta.id, bob)
    assert (await store.load_thread_items(meta.id, None, 10, "asc", bob)).data == []
    assert (await store.load_threads(10, None, "asc", bob)).data == []
    with pytest.raises(NotFoundError):
        await store.load_item(meta.id, ids[0], bob)
    with pytest.raises(NotFoundError):
        await store.load_attachment(attachment.id, bob)
    # Writes through another user's ids change nothing.
    hijack = before_thread.model_copy(update={"title": "pwned"})
    with pytest.raises(NotFoundError):
        await store.save_thread(hijack, bob)
    with pytest.raises(NotFoundError):
        await store.add_thread_item(meta.id, assistant(meta.id, "pwned", BASE, ids[0]), bob)
    with pytest.raises(NotFoundError):
        await store.save_item(meta.id, assistant(meta.id, "pwned", BASE, "msg_new"), bob)
    with pytest.raises(NotFoundError):
        await store.save_attachment(attachment.model_copy(update={"name": "pwned"}), bob)
    with pytest.raises(NotFoundError):
        await store.save_feedback(meta.id, [ids[0]], "negative", bob)
    await store.delete_thread_item(meta.id, ids[0], bob)
    with pytest.raises(NotFoundError):
        await store.delete_thread(meta.id, bob)
    with pytest.raises(NotFoundError):
        await store.delete_attachment(attachment.id, bob)

    assert await store.load_thread(meta.id, alice) == before_thread
    assert await store.load_thread_items(meta.id, None, 10, "asc", alice) == before_items
    assert await store.load_attachment(attachment.id, alice) == attachment


async def test_attachment_round_trip_and_delete(store: SqlStore, alice: RequestContext) -> None:
    attachment = FileAttachment(
        id=store.generate_attachment_id("text/plain", alice), name="n", mime_type="text/plain"
    )
    await store.save_attachment(attachment, alice)
    assert await store.load_attachment(attachment.id, alice) == attachment
    await store.delete_attachment(attachment.id, alice)
    with pytest.raises(NotFoundError):
        await store.load_attachment(attachment.id, alice)


async def test_feedback_second_vote_replaces_first(
    store: SqlStore, store_engine: AsyncEngine, alice: RequestContext
) -> None:
    meta = await saved_thread(store, alice)
    ids = await add_items(store, alice, meta.id, 2)
    await store.save_feedback(meta.id, ids, "positive", alice)
    await store.save_feedback(meta.id, [ids[0]], "negative", alice)
    votes = await feedback_of(store_engine, meta.id, alice.user_id)
    assert votes == {ids[0]: "negative", ids[1]: "positive"}


async def test_concurrent_writes_to_one_thread(
    store: SqlStore, store_engine: AsyncEngine, alice: RequestContext
) -> None:
    meta = await saved_thread(store, alice)
    await asyncio.gather(*(add_items(store, alice, meta.id, 5) for _ in range(4)))
    assert await count_items(store_engine, meta.id, alice.user_id) == 20
