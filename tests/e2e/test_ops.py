"""Every ChatKit op over real HTTP, beyond sending messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import pytest
from chatkit.types import (
    ClientToolCallItem,
    LockedStatus,
    StructuredInputFreeform,
    StructuredInputItem,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.context import RequestContext
from app.store.chatkit_store import SqlStore, new_id
from tests.e2e.harness import ChatKitClient, InProcessServer
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.server_fixtures import ClientFactory


@pytest.fixture(autouse=True)
def echo(fake: FakeLLM) -> None:
    fake.reset()

    def responder(request: RecordedRequest) -> Reply:
        if request.ends_with_tool_result:
            return Reply.text(f"tool result seen: {request.tool_result_text}")
        return Reply.text(f"answer to: {request.last_user_text}")

    fake.responder = responder


@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    env = {
        **server_env,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "THREAD_TITLES": "first_words",
    }
    process = InProcessServer(env=env, log_path=tmp_path_factory.mktemp("ops") / "s.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqlStore]:
    from app.store.database import create_engine

    engine = create_engine(postgres_url)
    yield SqlStore(engine)
    await engine.dispose()


def context_of(user_id: str) -> RequestContext:
    return RequestContext(user_id=user_id, token="-", request_id="test")


async def items_of(client: ChatKitClient, thread_id: str) -> list[dict[str, object]]:
    page = await client.call("items.list", {"thread_id": thread_id, "limit": 50, "order": "asc"})
    return list(page["data"])


async def test_retry_after_item_replaces_the_answer(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(server.base_url)
    first = await client.send("what is two plus two")
    thread_id = first.thread_id
    before = await items_of(client, thread_id)
    user_item, old_answer = before
    fake.responder = lambda request: Reply.text("a better answer")
    retried = await client.stream(
        "threads.retry_after_item", {"thread_id": thread_id, "item_id": user_item["id"]}
    )
    assert retried.status == 200 and retried.assistant_text() == "a better answer"
    after = await items_of(client, thread_id)
    assert after[0]["id"] == user_item["id"]
    assert len(after) == 2 and after[1]["id"] != old_answer["id"]
    assert after[1]["content"][0]["text"] == "a better answer"  # type: ignore[index]
    # The model saw the user's message again, once.
    assert fake.model_requests()[-1].user_texts == ["what is two plus two"]

    not_a_user_message = await client.request(
        "threads.retry_after_item", {"thread_id": thread_id, "item_id": after[1]["id"]}
    )
    assert not_a_user_message.status_code == 400


async def test_feedback_is_stored_per_item_and_user(
    server: InProcessServer, make_client: ClientFactory, pg_engine: AsyncEngine
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(server.base_url, user_id)
    thread_id = (await client.send("rate me")).thread_id
    answer = (await items_of(client, thread_id))[1]
    params = {"thread_id": thread_id, "item_ids": [answer["id"]], "kind": "positive"}
    assert await client.call("items.feedback", params) == {}
    assert await client.call("items.feedback", {**params, "kind": "negative"}) == {}
    async with pg_engine.connect() as conn:
        rows = (
            await conn.execute(
                text("select item_id, kind from chat_feedback where user_id = :u"), {"u": user_id}
            )
        ).all()
    assert [(r.item_id, r.kind) for r in rows] == [(answer["id"], "negative")]
    unknown = await client.request("items.feedback", {**params, "item_ids": ["msg_unknown"]})
    assert unknown.status_code == 404


async def test_client_tool_output_runs_a_turn_without_a_new_message(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory, store: SqlStore
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(server.base_url, user_id)
    thread_id = (await client.send("get my location")).thread_id
    call = ClientToolCallItem(
        id=new_id("tc"),
        thread_id=thread_id,
        created_at=datetime.now(),
        call_id="call_client_1",
        name="get_location",
        arguments={"precision": "city"},
    )
    await store.add_thread_item(thread_id, call, context_of(user_id))

    result = await client.stream(
        "threads.add_client_tool_output", {"thread_id": thread_id, "result": {"city": "Lyon"}}
    )
    assert result.status == 200 and not result.of_type("error")
    assert "Lyon" in result.assistant_text()
    assert "Lyon" in (fake.model_requests()[-1].tool_result_text or "")
    stored = [i for i in await items_of(client, thread_id) if i["type"] == "client_tool_call"]
    assert stored[0]["status"] == "completed" and stored[0]["output"] == {"city": "Lyon"}

    nothing_pending = await client.request(
        "threads.add_client_tool_output", {"thread_id": thread_id, "result": {}}
    )
    assert nothing_pending.status_code == 400


async def test_structured_input_runs_a_turn_with_the_answers(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory, store: SqlStore
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(server.base_url, user_id)
    thread_id = (await client.send("plan a trip")).thread_id
    question = StructuredInputItem(
        id=new_id("si"),
        thread_id=thread_id,
        created_at=datetime.now(),
        inputs=[StructuredInputFreeform(id="where", question="Where to?")],
    )
    await store.add_thread_item(thread_id, question, context_of(user_id))
    params = {
        "thread_id": thread_id,
        "item_id": question.id,
        "input": {"status": "answered", "answers": {"where": {"values": ["Kyoto"]}}},
    }
    result = await client.stream("threads.add_structured_input", params)
    assert result.status == 200 and not result.of_type("error")
    assert result.assistant_text().startswith("answer to:")
    assert "Kyoto" in json.dumps(fake.model_requests()[-1].input_items)
    answered = [i for i in await items_of(client, thread_id) if i["type"] == "structured_input"]
    assert answered[0]["status"] == "answered"
    again = await client.request("threads.add_structured_input", params)
    assert again.status_code == 400  # no longer pending


async def test_dictation_goes_to_the_model_server(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    params = {"audio_base64": "AAAA", "mime_type": "audio/webm"}
    response = await make_client(server.base_url).request("input.transcribe", params)
    assert response.status_code == 200, response.text
    assert response.json() == {"text": "fake transcript"}


@pytest.mark.parametrize("op", ["threads.custom_action", "threads.sync_custom_action"])
async def test_unknown_custom_actions_answer_400(
    server: InProcessServer, make_client: ClientFactory, op: str
) -> None:
    client = make_client(server.base_url)
    thread_id = (await client.send("hello")).thread_id
    params = {"thread_id": thread_id, "action": {"type": "do.something", "payload": {}}}
    response = await client.request(op, params)
    assert response.status_code == 400
    assert response.json()["type"] == "bad_request"
    assert "Unknown action type" in response.json()["message"]


async def test_message_naming_an_unknown_attachment_is_404(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    body = {
        "input": {
            "content": [{"type": "input_text", "text": "see file"}],
            "attachments": ["atc_1"],
            "inference_options": {},
        }
    }
    response = await make_client(server.base_url).request("threads.create", body)
    assert response.status_code == 404 and response.json()["type"] == "not_found"


async def test_locked_thread_refuses_new_messages(
    server: InProcessServer, make_client: ClientFactory, store: SqlStore
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(server.base_url, user_id)
    thread_id = (await client.send("hello")).thread_id
    user_item = (await items_of(client, thread_id))[0]
    thread = await store.load_thread(thread_id, context_of(user_id))
    thread.status = LockedStatus(reason="archived")
    await store.save_thread(thread, context_of(user_id))

    refused = await client.send("more", thread_id)
    assert refused.status == 409 and refused.raw[0]["type"] == "conflict"
    retry = await client.request(
        "threads.retry_after_item", {"thread_id": thread_id, "item_id": user_item["id"]}
    )
    assert retry.status_code == 409
    assert len(await items_of(client, thread_id)) == 2
