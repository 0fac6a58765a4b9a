"""Model picker and tool choice: the fake model's request shows what the composer asked for."""

from __future__ import annotations

import pytest

from tests.chat_features.conftest import DEFAULT_MODEL, OTHER_MODEL, tag_input, text_part
from tests.e2e.harness import InProcessServer
from tests.fake_llm import FakeLLM, Reply
from tests.recording_mcp import RunningMcp
from tests.server_fixtures import ClientFactory

# Validating widget events builds the SDK's named widget classes, which it deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Direct usage of named widget:DeprecationWarning")


async def test_a_listed_model_runs_the_turn(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    fake.enqueue(Reply.text("from b"), Reply.text("from a"))
    picked = await client.stream(
        "threads.create", {"input": tag_input(text_part("hi"), model=OTHER_MODEL)}
    )
    assert picked.assistant_text() == "from b"
    default = await client.send("and now?", picked.thread_id)
    assert default.assistant_text() == "from a"
    assert [r.model for r in fake.model_requests()] == [OTHER_MODEL, DEFAULT_MODEL]
    # The choice is stored with the message.
    items = await client.call("items.list", {"thread_id": picked.thread_id, "order": "asc"})
    first = next(i for i in items["data"] if i["type"] == "user_message")
    assert first["inference_options"]["model"] == OTHER_MODEL


async def test_other_models_and_tools_are_400_before_the_stream(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    thread_id = (await client.send("hello")).thread_id
    before = len(fake.model_requests())
    bad_inputs = [
        (tag_input(text_part("x"), model="gpt-5-ultra"), "choose one of: model-a, model-b"),
        (tag_input(text_part("x"), tool_choice={"id": "drop_tables"}), "list_tasks"),
    ]
    for user_input, message in bad_inputs:
        for op, params in (
            ("threads.create", {"input": user_input}),
            ("threads.add_user_message", {"thread_id": thread_id, "input": user_input}),
        ):
            response = await client.request(op, params)
            assert response.status_code == 400, response.text
            body = response.json()
            assert body["type"] == "bad_request" and message in body["message"], body
    assert len(fake.model_requests()) == before


async def test_tool_choice_forces_the_tool_once(
    features_server: InProcessServer,
    fake: FakeLLM,
    recording: RunningMcp,
    make_client: ClientFactory,
) -> None:
    client = make_client(features_server.base_url)
    fake.enqueue(Reply.tool_call("list_tasks", {"status": "all"}), Reply.text("Nothing yet."))
    result = await client.stream(
        "threads.create",
        {"input": tag_input(text_part("anything?"), tool_choice={"id": "list_tasks"})},
    )
    assert result.assistant_text() == "Nothing yet."
    first, second = fake.model_requests()
    assert first.tool_choice == "list_tasks"
    assert "list_tasks" in first.tool_names
    # After the forced call the model chooses freely again (no loop of forced calls).
    assert second.tool_choice in (None, "auto")
    assert [c.tool for c in recording.state.calls if c.authorization.endswith(client.token)] == [
        "list_tasks"
    ]
