"""Task mentions: GET /api/tasks for the page's tag search, and mentions the model understands."""

from __future__ import annotations

import httpx2
import pytest

from tests.chat_features.conftest import get_tasks, tag_input, text_part
from tests.e2e.harness import InProcessServer
from tests.fake_llm import FakeLLM, Reply
from tests.server_fixtures import ClientFactory

# Validating widget events builds the SDK's named widget classes, which it deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Direct usage of named widget:DeprecationWarning")


def task_tag(task_id: int, title: str, **data: object) -> dict[str, object]:
    """A mention the way a page builds it from a GET /api/tasks entry."""
    return {
        "type": "input_tag",
        "id": f"task:{task_id}",
        "text": title,
        "data": {"task_id": task_id, "title": title, **data},
        "group": "Tasks",
        "interactive": True,
    }


async def test_task_search_with_the_embedded_server(
    offline_server: InProcessServer, make_client: ClientFactory
) -> None:
    alice = make_client(offline_server.base_url)
    thread_id = (await alice.send("add task Buy milk")).thread_id
    for title in ("walk the dog", "milk the cow", "oat MILK"):
        await alice.send(f"add task {title}", thread_id)
    await alice.send("complete task " + str(await _id_of(alice, "walk the dog")), thread_id)

    found = await get_tasks(alice, query="milk")
    assert found.status_code == 200
    assert [(t["title"], t["completed"]) for t in found.json()["data"]] == [
        ("Buy milk", False),
        ("milk the cow", False),
        ("oat MILK", False),
    ]
    assert all(isinstance(t["id"], int) for t in found.json()["data"])
    assert len((await get_tasks(alice, query="MILK", limit=2)).json()["data"]) == 2
    everything = (await get_tasks(alice)).json()["data"]
    assert [t["title"] for t in everything] == [
        "Buy milk",
        "walk the dog",
        "milk the cow",
        "oat MILK",
    ]
    assert everything[1]["completed"] is True
    # Another user's search sees none of it.
    bob = make_client(offline_server.base_url)
    assert (await get_tasks(bob, query="milk")).json() == {"data": []}


async def _id_of(client: object, title: str) -> int:
    response = await get_tasks(client, query=title)  # type: ignore[arg-type]
    [task] = response.json()["data"]
    return int(task["id"])


async def test_task_search_refuses_bad_requests(
    offline_server: InProcessServer, make_client: ClientFactory
) -> None:
    client = make_client(offline_server.base_url)
    async with httpx2.AsyncClient(base_url=offline_server.base_url) as anonymous:
        missing = await anonymous.get("/api/tasks", params={"query": "x"})
    assert missing.status_code == 401 and missing.json()["type"] == "invalid_token"
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "many"}, {"query": "q" * 201}):
        response = await get_tasks(client, **params)
        assert response.status_code == 400, (params, response.text)
        assert set(response.json()) == {"type", "message", "status_code"}


async def test_a_mention_reaches_the_model_as_a_task_reference(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    fake.enqueue(Reply.text("Done."))
    result = await client.stream(
        "threads.create",
        {"input": tag_input(text_part("please finish "), task_tag(12, 'buy "oat" milk'))},
    )
    assert result.status == 200 and result.assistant_text() == "Done."
    texts = fake.model_requests()[0].user_texts
    assert 'please finish @buy "oat" milk' in texts
    assert any('refers to task #12 "buy \\"oat\\" milk".' in text for text in texts), texts


async def test_a_message_that_is_only_a_mention_is_accepted(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    fake.enqueue(Reply.text("What about it?"))
    result = await client.stream("threads.create", {"input": tag_input(task_tag(7, "call mom"))})
    assert result.status == 200, result.raw
    assert result.assistant_text() == "What about it?"
    assert any('task #7 "call mom"' in text for text in fake.model_requests()[0].user_texts)
    # An empty text part alone is still an empty message.
    empty = await client.request("threads.create", {"input": tag_input(text_part("  "))})
    assert empty.status_code == 400 and "empty" in empty.json()["message"]


async def test_mention_data_counts_toward_the_message_cap(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    bulky = task_tag(3, "big", notes="n" * 33_000)
    response = await client.request("threads.create", {"input": tag_input(bulky)})
    assert response.status_code == 400 and "32000" in response.json()["message"]
    assert fake.model_requests() == []
