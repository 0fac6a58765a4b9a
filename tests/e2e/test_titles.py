"""Thread titles: made after the first answer, saved, pushed as thread.updated, never in the way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chatkit.types import ThreadUpdatedEvent

from tests.e2e.harness import InProcessServer
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.server_fixtures import ClientFactory


def is_title_request(request: RecordedRequest) -> bool:
    return "title" in (request.instructions or "").lower() and not request.stream


@pytest.fixture(scope="module", params=["responses", "chat_completions"])
def model_server(
    request: pytest.FixtureRequest,
    server_env: dict[str, str],
    fake: FakeLLM,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessServer]:
    env = {
        **server_env,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "OPENAI_API": request.param,
        "THREAD_TITLES": "model",
    }
    server = InProcessServer(env=env, log_path=tmp_path_factory.mktemp("titles") / "s.log")
    server.start()
    yield server
    server.stop()


async def test_model_title_after_first_turn_only(
    model_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    def responder(request: RecordedRequest) -> Reply:
        if is_title_request(request):
            # Slow: it is asked for only once the answer has streamed.
            return Reply.text('"Weekly Groceries Plan."', delay_before=0.5)
        return Reply.text(f"answer: {request.last_user_text}")

    fake.reset()
    fake.responder = responder
    client = make_client(model_server.base_url)
    first = await client.send("I need to plan my groceries for the week")
    types = [event.type for event in first.events]
    assert types[-1] == "thread.updated"
    updated = first.events[-1]
    assert isinstance(updated, ThreadUpdatedEvent)
    assert updated.thread.title == "Weekly Groceries Plan"
    # The whole answer streamed before the title arrived.
    assert types.index("thread.item.done", types.index("thread.item.added")) < types.index(
        "thread.updated"
    )
    title_requests = [r for r in fake.model_requests() if is_title_request(r)]
    assert len(title_requests) == 1
    # Never beside the answer: the title was asked for after the answer's request.
    answer_requests = [r for r in fake.model_requests() if not is_title_request(r)]
    assert title_requests[0].time > answer_requests[0].time
    assert "plan my groceries" in (title_requests[0].last_user_text or "")

    stored = await client.call("threads.get_by_id", {"thread_id": first.thread_id})
    assert stored["title"] == "Weekly Groceries Plan"
    second = await client.send("and for next week?", first.thread_id)
    assert not second.of_type("thread.updated")
    assert len([r for r in fake.model_requests() if is_title_request(r)]) == 1


async def test_failed_title_call_falls_back_to_first_words(
    model_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    fake.reset()
    fake.responder = lambda request: (
        Reply.error(500) if is_title_request(request) else Reply.text("fine")
    )
    result = await make_client(model_server.base_url).send("remind me to call the plumber tomorrow")
    assert result.assistant_text() == "fine"
    assert result.events[-1].type == "thread.updated"
    assert result.events[-1].thread.title == "remind me to call the plumber…"


async def test_offline_titles_are_the_first_words(
    offline_server: InProcessServer, make_client: ClientFactory
) -> None:
    result = await make_client(offline_server.base_url).send("add task paint the fence")
    assert result.events[-1].type == "thread.updated"
    assert result.events[-1].thread.title == "add task paint the fence"


async def test_the_default_title_needs_no_model_request(
    server_env: dict[str, str], fake: FakeLLM, make_client: ClientFactory, tmp_path: Path
) -> None:
    env = {**server_env, "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "test-key"}
    env.pop("THREAD_TITLES", None)
    server = InProcessServer(env=env, log_path=tmp_path / "s.log")
    server.start()
    try:
        fake.reset()
        fake.responder = lambda request: Reply.text("fine")
        result = await make_client(server.base_url).send("water the plants on the balcony today")
        assert result.events[-1].type == "thread.updated"
        assert result.events[-1].thread.title == "water the plants on the balcony…"
        assert len(fake.model_requests()) == 1
        assert not any(is_title_request(r) for r in fake.model_requests())
    finally:
        server.stop()
