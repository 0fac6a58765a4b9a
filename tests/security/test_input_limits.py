"""Oversized, malformed and hostile bodies get a clear 4xx JSON answer, never a 5xx.

A dedicated server with small, known caps (MAX_BODY_BYTES=65536, MAX_MESSAGE_CHARS=1000).
Every rejected request is checked to have stored nothing for its user.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx2
import pytest
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ThreadMetadata,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from app.context import RequestContext
from app.store.chatkit_store import MAX_PAGE_SIZE, SqlStore, new_id
from tests.e2e.harness import ChatKitClient, InProcessServer, text_input
from tests.security.checks import assert_json_error, count_rows

MAX_BODY_BYTES = 65_536
MAX_MESSAGE_CHARS = 1_000
NUL = "\x00"


@pytest.fixture(scope="module")
def limits_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    env = {
        **server_env,
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "MAX_MESSAGE_CHARS": str(MAX_MESSAGE_CHARS),
        "THREAD_TITLES": "first_words",
    }
    server = InProcessServer(env=env, log_path=tmp_path_factory.mktemp("limits") / "server.log")
    server.start()
    yield server
    server.stop()


@dataclass
class Caller:
    """A user with one thread of one turn, talking to the limits server."""

    user_id: str
    client: ChatKitClient
    thread_id: str
    engine: AsyncEngine

    def headers(self, content_type: str | None = "application/json") -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.client.token}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def post(
        self, content: bytes | AsyncIterator[bytes], content_type: str | None = "application/json"
    ) -> httpx2.Response:
        return await self.client.http.post(
            "/api/chatkit", content=content, headers=self.headers(content_type)
        )

    async def rejected(
        self,
        content: bytes | AsyncIterator[bytes],
        statuses: Collection[int] = (400,),
        *,
        content_type: str | None = "application/json",
        error_type: str | None = None,
    ) -> dict[str, Any]:
        """Send a body that must be refused; nothing may be stored for the caller."""
        before = await count_rows(self.engine, self.user_id)
        response = await self.post(content, content_type)
        body = assert_json_error(response, statuses)
        if error_type is not None:
            assert body["type"] == error_type, body
        assert await count_rows(self.engine, self.user_id) == before
        return body


def request_body(op: str, params: Any, **extra: Any) -> bytes:
    return json.dumps({"type": op, "params": params, **extra}).encode()


@pytest.fixture(scope="module")
async def caller(
    limits_server: InProcessServer, minter: SharedSecretVerifier, pg_engine: AsyncEngine
) -> AsyncIterator[Caller]:
    user_id = f"user-limits-{uuid.uuid4().hex}"
    client = ChatKitClient(limits_server.base_url, minter.mint(user_id))
    try:
        started = await client.send("first message")
        assert started.status == 200, started.raw
        yield Caller(user_id, client, started.thread_id, pg_engine)
    finally:
        await client.aclose()


# -- body size ---------------------------------------------------------------------------------


def padded_create(size: int) -> bytes:
    """A threads.create body of exactly `size` bytes (the padding is in `metadata`)."""
    skeleton = request_body("threads.create", {"input": text_input("hi")}, metadata={"pad": ""})
    padding = size - len(skeleton)
    assert padding >= 0
    body = request_body(
        "threads.create", {"input": text_input("hi")}, metadata={"pad": "x" * padding}
    )
    assert len(body) == size
    return body


@asynccontextmanager
async def sent_headers(client: ChatKitClient) -> AsyncIterator[dict[str, str]]:
    """The headers of the requests `client` sends inside the block."""
    seen: dict[str, str] = {}

    async def record(request: httpx2.Request) -> None:
        seen.update(request.headers)

    client.http.event_hooks["request"].append(record)
    try:
        yield seen
    finally:
        client.http.event_hooks["request"].remove(record)


async def test_body_over_the_cap_with_content_length(caller: Caller) -> None:
    async with sent_headers(caller.client) as seen:
        body = await caller.rejected(
            padded_create(MAX_BODY_BYTES + 1), (413,), error_type="payload_too_large"
        )
    assert seen["content-length"] == str(MAX_BODY_BYTES + 1)
    assert str(MAX_BODY_BYTES) in body["message"]
    await caller.rejected(padded_create(4 * MAX_BODY_BYTES), (413,))


async def test_body_at_the_cap_is_read(caller: Caller) -> None:
    # Exactly MAX_BODY_BYTES passes the size check and reaches validation (the message is
    # too long), which shows the cap is not off by one.
    skeleton = request_body("threads.create", {"input": text_input("")})
    body = request_body(
        "threads.create", {"input": text_input("y" * (MAX_BODY_BYTES - len(skeleton)))}
    )
    assert len(body) == MAX_BODY_BYTES
    answer = await caller.rejected(body, (400,), error_type="bad_request")
    assert "too long" in answer["message"]


async def _chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    body = padded_create(total)
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_body_over_the_cap_chunked_without_content_length(caller: Caller) -> None:
    async with sent_headers(caller.client) as seen:
        await caller.rejected(_chunks(2 * MAX_BODY_BYTES), (413,), error_type="payload_too_large")
    assert "content-length" not in seen and seen.get("transfer-encoding") == "chunked"


async def test_chunked_body_under_the_cap_is_accepted(caller: Caller) -> None:
    body = request_body("threads.list", {"limit": 1})

    async def one_chunk() -> AsyncIterator[bytes]:
        yield body

    response = await caller.post(one_chunk())
    assert response.status_code == 200, response.text


# -- messages ----------------------------------------------------------------------------------


async def test_message_over_max_chars(caller: Caller) -> None:
    too_long = "z" * (MAX_MESSAGE_CHARS + 1)
    body = await caller.rejected(
        request_body("threads.create", {"input": text_input(too_long)}), error_type="bad_request"
    )
    assert str(MAX_MESSAGE_CHARS) in body["message"]
    await caller.rejected(
        request_body(
            "threads.add_user_message",
            {"thread_id": caller.thread_id, "input": text_input(too_long)},
        ),
        error_type="bad_request",
    )
    # Quoted text and several parts count together.
    split = {
        **text_input("a" * 600),
        "quoted_text": "b" * 401,
    }
    await caller.rejected(request_body("threads.create", {"input": split}))
    parts = {
        **text_input("c" * 500),
        "content": [{"type": "input_text", "text": "c" * 500}] * 2
        + [{"type": "input_text", "text": "c"}],
    }
    await caller.rejected(request_body("threads.create", {"input": parts}))


async def test_message_at_max_chars_is_accepted(caller: Caller) -> None:
    result = await caller.client.send("m" * MAX_MESSAGE_CHARS, caller.thread_id)
    assert result.status == 200 and not result.of_type("error"), result.raw[:3]


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "input_text", "text": ""}],
        [{"type": "input_text", "text": " \n\t "}],
        [],
    ],
    # A message that is only a mention is a message (issue 11): tests/chat_features cover it.
    ids=["empty", "blank", "no-parts"],
)
async def test_empty_message(caller: Caller, content: list[dict[str, Any]]) -> None:
    user_input = {"content": content, "attachments": [], "inference_options": {}}
    for op, params in [
        ("threads.create", {"input": user_input}),
        ("threads.add_user_message", {"thread_id": caller.thread_id, "input": user_input}),
    ]:
        body = await caller.rejected(request_body(op, params), error_type="bad_request")
        assert "empty" in body["message"]


# -- malformed JSON ------------------------------------------------------------------------------


def nested_list(depth: int, *, closed: bool = True) -> bytes:
    inner = b"[" * depth + (b"]" * depth if closed else b"")
    return b'{"type":"threads.list","params":{"limit":1,"x":' + inner + b"}}"


def nested_object(depth: int) -> bytes:
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"type":"threads.list","params":{"limit":1,"x":' + inner + b"}}"


async def test_moderate_nesting_in_an_unknown_field_is_ignored(caller: Caller) -> None:
    for body in (nested_list(100), nested_object(100)):
        response = await caller.post(body)
        assert response.status_code == 200, response.text
        assert "data" in response.json()


@pytest.mark.parametrize("depth", [100, 1_000, 30_000])
async def test_deeply_nested_json(caller: Caller, depth: int) -> None:
    bodies = [nested_list(depth, closed=False)]
    if depth > 100:
        bodies += [nested_list(depth), nested_object(depth)]
    for body in bodies:
        expected = (400,) if len(body) <= MAX_BODY_BYTES else (413,)
        answer = await caller.rejected(body, expected)
        if depth > 100 and expected == (400,):
            assert "Invalid JSON" in answer["message"], answer


async def test_deeper_nesting_than_the_cap_is_413(caller: Caller) -> None:
    await caller.rejected(nested_list(100_000), (413,))
    await caller.rejected(nested_list(100_000, closed=False), (413,))


async def test_nesting_inside_a_free_form_field(caller: Caller) -> None:
    # `result` (and `metadata`) are typed Any: the parser's depth limit, not the schema, stops it.
    deep = b'{"k":' * 1_000 + b"null" + b"}" * 1_000
    body = (
        b'{"type":"threads.add_client_tool_output","metadata":'
        + deep
        + b',"params":{"thread_id":'
        + json.dumps(caller.thread_id).encode()
        + b',"result":'
        + deep
        + b"}}"
    )
    answer = await caller.rejected(body, error_type="bad_request")
    assert "Invalid JSON" in answer["message"], answer


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"threads.list","params":{"after":"\xff\xfe"}}',
        b'{"type":"threads.list","params":{"after":"\xc0\xaf"}}',
        b'{"type":"threads.get_by_id","params":{"thread_id":"thr_\xed\xa0\x80"}}',
        b"\xff\xfe{\x00}\x00",
        b'{"type":"threads.list","params":{"limit":1}}\xff',
        b'{"type":"threads.get_by_id","params":{"thread_id":"thr_\\ud800"}}',
        b'{"type":"threads.create","params":{"input":{"content":[{"type":"input_text",'
        b'"text":"hi \\udfff"}],"attachments":[],"inference_options":{}}}}',
    ],
    ids=[
        "invalid-bytes",
        "overlong",
        "encoded-surrogate",
        "utf16-bom",
        "trailing-garbage",
        "lone-surrogate-escape-in-id",
        "lone-surrogate-escape-in-text",
    ],
)
async def test_invalid_utf8(caller: Caller, body: bytes) -> None:
    await caller.rejected(body, error_type="bad_request")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'"threads.list"',
        b"1e400",
        b"{",
        b'{"type":"threads.list","params":{}',
        b'{"type":"threads.list","params":{}}{"type":"threads.list","params":{}}',
        b'{"type":"threads.list","params":{"limit":NaN}}',
        b'{"type":"threads.list","params":{"limit":Infinity}}',
        b'{"type":"threads.list","params":{"limit":1e308}}',
        b'{"type":"threads.list","params":{"limit":1.5}}',
    ],
)
async def test_not_a_json_request(caller: Caller, body: bytes) -> None:
    await caller.rejected(body, error_type="bad_request")


async def test_wrong_content_type(caller: Caller) -> None:
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        await caller.rejected(b"type=threads.list&params=", content_type=content_type)
    await caller.rejected(b"<xml/>", content_type="application/xml")
    # A JSON body under another media type is read as JSON: the endpoint does not look at
    # Content-Type (the Authorization header already forces a CORS preflight in browsers).
    for json_type in ("text/plain", None):
        response = await caller.post(request_body("threads.list", {"limit": 1}), json_type)
        if response.status_code != 200:
            assert_json_error(response, (400, 415))


# -- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"type": "threads.nope", "params": {}},
        {"type": "THREADS.LIST", "params": {}},
        {"type": "threads.list "},
        {"type": None, "params": {}},
        {"params": {}},
    ],
    ids=["unknown-op", "upper-case-op", "padded-op-no-params", "null-op", "no-op"],
)
async def test_unknown_op(caller: Caller, body: dict[str, Any]) -> None:
    await caller.rejected(json.dumps(body).encode(), error_type="bad_request")


@pytest.mark.parametrize(
    ("op", "params"),
    [
        ("threads.create", None),
        ("threads.create", {}),
        ("threads.create", {"input": {"content": [{"type": "input_text", "text": "hi"}]}}),
        ("threads.add_user_message", {"input": text_input("hi")}),
        ("threads.get_by_id", {}),
        ("items.list", {}),
        ("items.feedback", {"thread_id": "thr_x", "kind": "positive"}),
        ("threads.update", {"thread_id": "thr_x"}),
        ("threads.retry_after_item", {"thread_id": "thr_x"}),
        ("threads.add_structured_input", {"thread_id": "thr_x", "item_id": "x"}),
        ("threads.custom_action", {"thread_id": "thr_x"}),
        ("attachments.delete", {}),
    ],
)
async def test_missing_params(caller: Caller, op: str, params: Any) -> None:
    body = {"type": op} if params is None else {"type": op, "params": params}
    answer = await caller.rejected(json.dumps(body).encode(), error_type="bad_request")
    assert "Not a valid ChatKit request" in answer["message"]


@pytest.mark.parametrize(
    ("op", "params"),
    [
        ("threads.get_by_id", {"thread_id": 5}),
        ("threads.get_by_id", {"thread_id": None}),
        ("threads.get_by_id", {"thread_id": ["thr_x"]}),
        ("threads.update", {"thread_id": "thr_x", "title": 12}),
        ("threads.list", {"after": 1.5}),
        ("threads.list", {"limit": "ten"}),
        ("threads.list", {"limit": [1]}),
        ("threads.list", {"order": "sideways"}),
        ("items.feedback", {"thread_id": "thr_x", "item_ids": "msg_x", "kind": "positive"}),
        ("items.feedback", {"thread_id": "thr_x", "item_ids": [1], "kind": "positive"}),
        ("items.feedback", {"thread_id": "thr_x", "item_ids": [], "kind": "meh"}),
        ("threads.create", {"input": {**text_input("x"), "content": [{"type": "input_text"}]}}),
        ("threads.create", {"input": {**text_input("x"), "content": "hello"}}),
        ("threads.create", {"input": {**text_input("x"), "attachments": [7]}}),
        ("threads.create", {"input": {**text_input("x"), "inference_options": []}}),
    ],
)
async def test_wrong_types(caller: Caller, op: str, params: dict[str, Any]) -> None:
    await caller.rejected(request_body(op, params), error_type="bad_request")


async def test_extra_unknown_fields_are_ignored_and_not_stored(
    caller: Caller, pg_engine: AsyncEngine
) -> None:
    marker = f"extra-{uuid.uuid4().hex}"
    response = await caller.post(
        request_body("threads.list", {"limit": 1, marker: marker}, **{marker: [marker]})
    )
    assert response.status_code == 200 and marker not in response.text
    user_input = {**text_input("hello with extras"), marker: marker}
    user_input["content"] = [{"type": "input_text", "text": "hello with extras", marker: 1}]
    result = await caller.client.stream(
        "threads.add_user_message",
        {"thread_id": caller.thread_id, "input": user_input, marker: marker},
    )
    assert result.status == 200 and not result.of_type("error"), result.raw[:3]
    async with pg_engine.connect() as conn:
        stored = await conn.scalar(
            text("select count(*) from chat_items where user_id = :u and data like :m"),
            {"u": caller.user_id, "m": f"%{marker}%"},
        )
    assert stored == 0


# -- pages -------------------------------------------------------------------------------------


@dataclass
class Pager:
    client: ChatKitClient
    thread_id: str


@pytest.fixture(scope="module")
async def pager(
    limits_server: InProcessServer, minter: SharedSecretVerifier, pg_engine: AsyncEngine
) -> AsyncIterator[Pager]:
    """A user with 120 threads, the last of which holds 120 items (written through the store)."""
    user_id = f"user-pager-{uuid.uuid4().hex}"
    store, context = SqlStore(pg_engine), RequestContext(user_id, "-", "limits")
    start = datetime.now() - timedelta(hours=1)
    thread_id = ""
    for n in range(120):
        thread_id = new_id("thr")
        created = start + timedelta(seconds=n)
        await store.save_thread(ThreadMetadata(id=thread_id, created_at=created), context)
    for n in range(120):
        item = AssistantMessageItem(
            id=new_id("msg"),
            thread_id=thread_id,
            created_at=start + timedelta(seconds=n),
            content=[AssistantMessageContent(text=f"item {n}")],
        )
        await store.add_thread_item(thread_id, item, context)
    client = ChatKitClient(limits_server.base_url, minter.mint(user_id))
    yield Pager(client, thread_id)
    await client.aclose()


@pytest.mark.parametrize("limit", [101, 10_000, 2**31, 2**63, 10**30])
async def test_huge_limit_is_clamped(pager: Pager, limit: int) -> None:
    threads = await pager.client.call("threads.list", {"limit": limit})
    assert len(threads["data"]) == MAX_PAGE_SIZE and threads["has_more"] is True
    items = await pager.client.call("items.list", {"thread_id": pager.thread_id, "limit": limit})
    assert len(items["data"]) == MAX_PAGE_SIZE and items["has_more"] is True
    rest = await pager.client.call(
        "items.list", {"thread_id": pager.thread_id, "limit": limit, "after": items["after"]}
    )
    assert len(rest["data"]) == 20 and rest["has_more"] is False


@pytest.mark.parametrize("limit", [-1, -(2**63), -(10**30)])
async def test_negative_limit_gives_one_row(pager: Pager, limit: int) -> None:
    threads = await pager.client.call("threads.list", {"limit": limit})
    assert len(threads["data"]) == 1 and threads["has_more"] is True
    items = await pager.client.call("items.list", {"thread_id": pager.thread_id, "limit": limit})
    assert len(items["data"]) == 1 and items["has_more"] is True


async def test_zero_or_null_limit_gives_the_default_page(pager: Pager) -> None:
    for limit in (0, None):
        threads = await pager.client.call("threads.list", {"limit": limit})
        assert len(threads["data"]) == 20


# -- ids ---------------------------------------------------------------------------------------

LONG_ID = "thr_" + "x" * 10_240


def _ops_naming(thread_id: str, item_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("threads.get_by_id", {"thread_id": thread_id}),
        ("items.list", {"thread_id": thread_id}),
        ("threads.update", {"thread_id": thread_id, "title": "t"}),
        ("threads.delete", {"thread_id": thread_id}),
        ("threads.add_user_message", {"thread_id": thread_id, "input": text_input("hi")}),
        ("threads.retry_after_item", {"thread_id": thread_id, "item_id": item_id}),
        ("items.feedback", {"thread_id": thread_id, "item_ids": [item_id], "kind": "positive"}),
        ("threads.add_client_tool_output", {"thread_id": thread_id, "result": {}}),
        (
            "threads.add_structured_input",
            {"thread_id": thread_id, "item_id": item_id, "input": {}},
        ),
    ]


async def test_very_long_thread_id(caller: Caller) -> None:
    for op, params in _ops_naming(LONG_ID, "msg_x"):
        await caller.rejected(request_body(op, params), (404,), error_type="not_found")
    await caller.rejected(request_body("threads.list", {"after": LONG_ID}), (404,))


async def test_very_long_item_id_in_own_thread(caller: Caller) -> None:
    long_item = "msg_" + "y" * 10_240
    for op, params in [
        ("threads.retry_after_item", {"thread_id": caller.thread_id, "item_id": long_item}),
        ("items.list", {"thread_id": caller.thread_id, "after": long_item}),
        (
            "items.feedback",
            {"thread_id": caller.thread_id, "item_ids": [long_item], "kind": "positive"},
        ),
    ]:
        await caller.rejected(request_body(op, params), (404,), error_type="not_found")


@pytest.mark.parametrize("index", range(len(_ops_naming("t", "i"))))
async def test_nul_in_thread_id(caller: Caller, index: int) -> None:
    op, params = _ops_naming(f"thr_{NUL}x", "msg_x")[index]
    await caller.rejected(request_body(op, params), (400, 404))


async def test_nul_in_list_cursor(caller: Caller) -> None:
    await caller.rejected(request_body("threads.list", {"after": f"thr_{NUL}"}), (400, 404))


@pytest.mark.parametrize(
    "op", ["threads.retry_after_item", "items.list", "items.feedback", "structured_input"]
)
async def test_nul_in_item_id_of_own_thread(caller: Caller, op: str) -> None:
    item_id = f"msg_{NUL}"
    params_of: dict[str, dict[str, Any]] = {
        "threads.retry_after_item": {"thread_id": caller.thread_id, "item_id": item_id},
        "items.list": {"thread_id": caller.thread_id, "after": item_id},
        "items.feedback": {
            "thread_id": caller.thread_id,
            "item_ids": [item_id],
            "kind": "positive",
        },
        "structured_input": {"thread_id": caller.thread_id, "item_id": item_id, "input": {}},
    }
    params = params_of[op]
    name = "threads.add_structured_input" if op == "structured_input" else op
    await caller.rejected(request_body(name, params), (400, 404))


async def test_nul_in_message_text_is_stored_and_read_back(
    caller: Caller, pg_engine: AsyncEngine
) -> None:
    message = f"before{NUL}after {NUL}{NUL} end"
    result = await caller.client.send(message)
    assert result.status == 200 and not result.of_type("error"), result.raw[:3]
    thread_id = result.thread_id
    page = await caller.client.call("items.list", {"thread_id": thread_id, "order": "asc"})
    assert page["data"][0]["content"][0]["text"] == message
    thread = await caller.client.call("threads.get_by_id", {"thread_id": thread_id})
    assert thread["items"]["data"][0]["content"][0]["text"] == message
    async with pg_engine.connect() as conn:
        data = await conn.scalar(
            text("select data from chat_items where thread_id = :t and type = 'user_message'"),
            {"t": thread_id},
        )
    assert json.loads(data)["content"][0]["text"] == message
    # The thread lives on: a second message in it works too.
    again = await caller.client.send(f"second{NUL}", thread_id)
    assert again.status == 200 and not again.of_type("error")


async def test_nul_in_a_task_title_is_refused_by_the_tool(caller: Caller) -> None:
    """Postgres text columns cannot hold NUL: the tool refuses it and the turn ends normally."""
    before = await count_rows(caller.engine, caller.user_id)
    result = await caller.client.send(f"add task nul{NUL}title")
    assert result.status == 200 and not result.of_type("error"), result.raw[:3]
    assert "NUL" in result.assistant_text(), result.assistant_text()
    after = await count_rows(caller.engine, caller.user_id)
    assert after["todo_tasks"] == before["todo_tasks"]


async def test_message_with_a_tag_is_answered_or_refused(caller: Caller) -> None:
    tag = {"type": "input_tag", "id": "t1", "text": "groceries", "data": {}, "interactive": False}
    tagged = {
        **text_input("list tasks"),
        "content": [{"type": "input_text", "text": "list tasks"}, tag],
    }
    before = await count_rows(caller.engine, caller.user_id)
    response = await caller.post(request_body("threads.create", {"input": tagged}))
    if response.status_code != 200:  # refusing tags up front is a fine answer too
        assert_json_error(response, (400,))
        assert await count_rows(caller.engine, caller.user_id) == before
        return
    first = check_events(response.text)
    assert not [e for e in first if e["type"] == "error"], first
    thread_id = next(e["thread"]["id"] for e in first if e["type"] == "thread.created")
    later = await caller.client.send("list tasks", thread_id)
    assert later.status == 200 and not later.of_type("error"), later.raw


def check_events(payload: str) -> list[dict[str, Any]]:
    return [json.loads(frame[len("data: ") :]) for frame in payload.split("\n\n") if frame]
