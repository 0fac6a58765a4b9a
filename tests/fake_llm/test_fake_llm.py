"""The fake model server against the real clients: openai's AsyncOpenAI and agents' models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import agents
import httpx2
import openai
import pytest
from agents import Agent, Model, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputMessage,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)

from tests.fake_llm import FakeLLM, RecordedRequest, Reply, ToolCall, echo_responder

USER_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeLLM) -> Iterator[FakeLLM]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture
async def client(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    """A client that validates every answer against openai's own types."""
    async with fake.client(strict=True) as strict_client:
        yield strict_client


@pytest.fixture
async def quick_client(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    """A client that gives up after 0.3 s without data."""
    async with fake.client(strict=True, timeout=0.3) as impatient_client:
        yield impatient_client


@pytest.fixture(autouse=True, scope="module")
def _no_tracing() -> Iterator[None]:
    agents.set_tracing_disabled(True)
    yield


async def _response_events(
    client: openai.AsyncOpenAI, text: str = "Hi there"
) -> list[ResponseStreamEvent]:
    stream = await client.responses.create(model="gpt-4o-mini", input=text, stream=True)
    return [event async for event in stream]


async def _chat_chunks(
    client: openai.AsyncOpenAI, text: str = "Hi there", *, include_usage: bool = False
) -> list[ChatCompletionChunk]:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True} if include_usage else openai.omit,
    )
    return [chunk async for chunk in stream]


async def _raw_sse(fake: FakeLLM, path: str, body: dict[str, Any]) -> list[dict[str, str]]:
    """POST and split the raw SSE body into frames of {field: value}."""
    async with httpx2.AsyncClient(base_url=fake.base_url) as http:
        response = await http.post(path, json=body, headers={"authorization": "Bearer test-key"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = []
    for block in response.text.split("\n\n"):
        if block:
            frames.append(dict(line.split(": ", 1) for line in block.split("\n")))
    return frames


# ---------------------------------------------------------------- Responses API


async def test_responses_stream_text_parses_into_typed_events(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    script = "Hello there, how are you today?"
    fake.enqueue(Reply.text(script, chunk_size=5))

    events = await _response_events(client, "Say hello")

    assert [e.type for e in events[:4]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert [e.type for e in events[-4:]] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert len(deltas) == 7
    assert "".join(d.delta for d in deltas) == script

    added = events[2]
    assert isinstance(added, ResponseOutputItemAddedEvent)
    assert isinstance(added.item, ResponseOutputMessage)
    assert added.item.id.startswith("msg_")
    assert added.item.status == "in_progress"
    assert {d.item_id for d in deltas} == {added.item.id}

    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.status == "completed"
    assert completed.response.output_text == script
    assert completed.response.usage is not None
    assert completed.response.usage.total_tokens > 0

    (request,) = fake.requests
    assert request.api == "responses"
    assert request.stream
    assert request.last_user_text == "Say hello"
    assert request.headers["authorization"] == "Bearer test-key"


async def test_responses_stream_tool_calls_after_text(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(
        Reply.tool_calls(
            ToolCall("add", {"a": 12, "b": 30}),
            ToolCall("lookup", '{"query": "weather in Paris"}'),
            text="Let me check.",
        )
    )

    events = await _response_events(client)

    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    message, *calls = completed.response.output
    assert isinstance(message, ResponseOutputMessage)
    assert completed.response.output_text == "Let me check."
    assert all(isinstance(call, ResponseFunctionToolCall) for call in calls)
    function_calls = [call for call in calls if isinstance(call, ResponseFunctionToolCall)]
    assert [call.name for call in function_calls] == ["add", "lookup"]
    for call in function_calls:
        assert call.id is not None and call.id.startswith("fc_")
        assert call.call_id.startswith("call_")
        streamed = "".join(
            e.delta
            for e in events
            if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent) and e.item_id == call.id
        )
        assert streamed == call.arguments
    assert json.loads(function_calls[0].arguments) == {"a": 12, "b": 30}
    assert json.loads(function_calls[1].arguments) == {"query": "weather in Paris"}
    assert len({call.call_id for call in function_calls}) == 2


async def test_responses_and_chat_frames_on_the_wire(fake: FakeLLM) -> None:
    fake.enqueue(Reply.text("abc"), Reply.text("abc"))

    responses = await _raw_sse(
        fake, "/responses", {"model": "gpt-4o-mini", "input": "x", "stream": True}
    )
    for frame in responses:
        assert frame["event"] == json.loads(frame["data"])["type"]
    assert responses[-1]["event"] == "response.completed"

    chat = await _raw_sse(
        fake, "/chat/completions", {"model": "m", "messages": USER_MESSAGES, "stream": True}
    )
    assert all(set(frame) == {"data"} for frame in chat)
    assert chat[-1]["data"] == "[DONE]"
    assert json.loads(chat[-2]["data"])["choices"][0]["finish_reason"] == "stop"


async def test_non_streamed_answers_parse(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(
        Reply.text("A short title"),
        Reply.text("Another title"),
        Reply.tool_call("add", {"a": 1, "b": 2}),
    )

    response = await client.responses.create(model="gpt-4o-mini", input="title please")
    assert response.output_text == "A short title"

    completion = await client.chat.completions.create(model="m", messages=USER_MESSAGES)
    assert completion.choices[0].message.content == "Another title"
    assert completion.choices[0].finish_reason == "stop"

    with_tool = await client.chat.completions.create(model="m", messages=USER_MESSAGES)
    (tool_call,) = with_tool.choices[0].message.tool_calls or []
    assert tool_call.type == "function"
    assert tool_call.function.name == "add"
    assert json.loads(tool_call.function.arguments) == {"a": 1, "b": 2}
    assert with_tool.choices[0].finish_reason == "tool_calls"
    assert [request.stream for request in fake.requests] == [False, False, False]


# ---------------------------------------------------------------- Chat Completions


async def test_chat_stream_text_then_tool_call_with_usage(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    arguments = {"city": "Paris", "days": [1, 2, 3], "units": "metric"}
    fake.enqueue(Reply.tool_call("forecast", arguments, text="Checking the forecast"))

    chunks = await _chat_chunks(client, include_usage=True)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert "".join(d.content or "" for d in deltas) == "Checking the forecast"
    tool_deltas = [tc for d in deltas for tc in d.tool_calls or []]
    assert {tc.index for tc in tool_deltas} == {0}
    assert tool_deltas[0].id is not None and tool_deltas[0].id.startswith("call_")
    assert tool_deltas[0].type == "function"
    assert tool_deltas[0].function is not None and tool_deltas[0].function.name == "forecast"
    assert len(tool_deltas) > 2  # the arguments really arrive in pieces
    joined = "".join(tc.function.arguments or "" for tc in tool_deltas if tc.function)
    assert json.loads(joined) == arguments

    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finish[-1] == "tool_calls"
    assert all(reason is None for reason in finish[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_chat_stream_several_tool_calls_and_no_usage_unless_asked(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.tool_calls(ToolCall("a", {"x": 1}), ToolCall("b", {"y": 2})))

    chunks = await _chat_chunks(client)

    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[0].choices[0].delta.content is None
    by_index: dict[int, str] = {}
    names: dict[int, str] = {}
    for chunk in chunks:
        for tc in chunk.choices[0].delta.tool_calls or []:
            assert tc.function is not None
            by_index[tc.index] = by_index.get(tc.index, "") + (tc.function.arguments or "")
            if tc.function.name:
                names[tc.index] = tc.function.name
    assert names == {0: "a", 1: "b"}
    assert {i: json.loads(text) for i, text in by_index.items()} == {0: {"x": 1}, 1: {"y": 2}}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# ---------------------------------------------------------------- agents, end to end


ModelFactory = Callable[[openai.AsyncOpenAI], Model]

MODELS: dict[str, ModelFactory] = {
    "responses": lambda client: OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client),
    "chat_completions": lambda client: OpenAIChatCompletionsModel(
        model="gpt-4o-mini", openai_client=client
    ),
}


@pytest.mark.parametrize("api", list(MODELS))
async def test_agent_runs_a_local_tool_then_answers(
    fake: FakeLLM, api: str, client: openai.AsyncOpenAI
) -> None:
    ran: list[tuple[int, int]] = []

    @agents.function_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        ran.append((a, b))
        return a + b

    fake.enqueue(Reply.tool_call("add", {"a": 2, "b": 3}), Reply.text("2 + 3 = 5, done."))
    agent = Agent(
        name="calculator",
        instructions="You add numbers.",
        model=MODELS[api](client),
        tools=[add],
    )

    result = Runner.run_streamed(agent, input="What is 2 + 3?")
    event_types = [event.type async for event in result.stream_events()]

    assert ran == [(2, 3)]
    assert result.final_output == "2 + 3 = 5, done."
    assert "raw_response_event" in event_types
    first, second = fake.requests
    assert first.api == second.api == api
    assert first.tool_names == second.tool_names == ["add"]
    assert first.instructions == second.instructions == "You add numbers."
    assert first.last_user_text == second.last_user_text == "What is 2 + 3?"
    assert not first.ends_with_tool_result
    assert second.ends_with_tool_result
    assert second.tool_result_text == "5"
    # responses: user, function_call, function_call_output; chat: system, user, assistant, tool
    assert (first.input_item_count, second.input_item_count) == (
        (1, 3) if api == "responses" else (2, 4)
    )
    assert fake.pending_replies == 0


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, openai.InternalServerError),
        (429, openai.RateLimitError),
        (400, openai.BadRequestError),
    ],
)
async def test_status_fault_raises_the_matching_openai_error(
    fake: FakeLLM, status: int, error: type[openai.APIStatusError], client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.text("never sent", status=status, error_message="scripted failure"))

    with pytest.raises(error) as raised:
        await _response_events(client)

    assert raised.value.status_code == status
    assert raised.value.message.endswith("scripted failure")
    assert (
        isinstance(raised.value.body, dict) and raised.value.body["message"] == "scripted failure"
    )


async def test_error_reply_on_chat_completions(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply.error(503))

    with pytest.raises(openai.InternalServerError):
        await _chat_chunks(client)


async def test_cut_responses_stream_raises_after_the_sent_deltas(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.text("one two three four five six", chunk_size=4, cut_after=3))
    received: list[ResponseStreamEvent] = []

    with pytest.raises(openai.APIConnectionError):
        stream = await client.responses.create(model="m", input="x", stream=True)
        async for event in stream:
            received.append(event)

    deltas = [e for e in received if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(d.delta for d in deltas) == "one two thre"
    assert not any(isinstance(e, ResponseCompletedEvent) for e in received)


async def test_cut_after_every_delta_still_withholds_completion(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.text("short", cut_after=100))
    received: list[ResponseStreamEvent] = []

    with pytest.raises(openai.APIConnectionError):
        stream = await client.responses.create(model="m", input="x", stream=True)
        async for event in stream:
            received.append(event)

    assert received[-1].type == "response.output_item.done"


async def test_cut_chat_stream_raises(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply.tool_call("add", {"a": 1, "b": 2}, cut_after=1))
    received: list[ChatCompletionChunk] = []

    with pytest.raises(openai.APIConnectionError):
        stream = await client.chat.completions.create(
            model="m", messages=USER_MESSAGES, stream=True
        )
        async for chunk in stream:
            received.append(chunk)

    assert len(received) == 3  # role chunk, tool call opening, one argument delta
    assert all(chunk.choices[0].finish_reason is None for chunk in received)


async def test_cut_non_streamed_answer_raises(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply.text("a title", cut_after=0))

    with pytest.raises(openai.APIConnectionError):
        await client.responses.create(model="m", input="x")


async def test_agent_run_fails_on_a_cut_stream(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply.text("partial answer that never ends", cut_after=2))
    agent = Agent(name="a", model=OpenAIResponsesModel("gpt-4o-mini", client))

    result = Runner.run_streamed(agent, input="hello")
    with pytest.raises(openai.APIConnectionError):
        async for _ in result.stream_events():
            pass


async def test_delay_before_beyond_the_client_timeout_raises_timeout(
    fake: FakeLLM, quick_client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.text("too late", delay_before=5.0))

    with pytest.raises(openai.APITimeoutError):
        await _response_events(quick_client)

    (request,) = await fake.wait_for_requests(1)
    await _until(lambda: request.client_disconnected)


async def test_delay_between_beyond_the_client_timeout_raises_mid_stream(
    fake: FakeLLM, quick_client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.text_chunks(["first", "second"], delay_between=5.0))
    received: list[ChatCompletionChunk] = []

    with pytest.raises(openai.APITimeoutError):
        stream = await quick_client.chat.completions.create(
            model="m", messages=USER_MESSAGES, stream=True
        )
        async for chunk in stream:
            received.append(chunk)

    assert [chunk.choices[0].delta.content for chunk in received] == ["", "first"]


async def test_small_delays_still_deliver_everything(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.text_chunks(["a", "b", "c"], delay_before=0.05, delay_between=0.02))

    events = await _response_events(client)

    assert isinstance(events[-1], ResponseCompletedEvent)
    assert events[-1].response.output_text == "abc"


async def test_hang_never_answers_until_the_client_gives_up(
    fake: FakeLLM, quick_client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.text("unreachable", hang=True))

    with pytest.raises(openai.APITimeoutError):
        await quick_client.responses.create(model="m", input="x", stream=True)

    (request,) = fake.requests
    await _until(lambda: request.client_disconnected)


async def test_stop_releases_a_hanging_request() -> None:
    fake = FakeLLM().start()
    async with fake.client(timeout=30) as client:
        try:
            fake.enqueue(Reply.text("unreachable", hang=True))
            call = asyncio.create_task(client.responses.create(model="m", input="x"))
            await fake.wait_for_requests(1)
            assert not call.done()
        finally:
            await asyncio.to_thread(fake.stop)

        with pytest.raises(openai.InternalServerError) as raised:
            await asyncio.wait_for(call, timeout=5)
        assert raised.value.status_code == 503


# ---------------------------------------------------------------- scripting


async def test_responder_answers_concurrent_users_from_their_own_request(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    fake.responder = echo_responder

    async def ask_responses(user: int) -> str:
        events = await _response_events(client, f"user {user} says hello")
        completed = events[-1]
        assert isinstance(completed, ResponseCompletedEvent)
        return completed.response.output_text

    async def ask_chat(user: int) -> str:
        chunks = await _chat_chunks(client, f"user {user} says hello")
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    users = range(20)
    answers = await asyncio.gather(*(ask_responses(u) if u % 2 else ask_chat(u) for u in users))

    assert answers == [f"echo: user {u} says hello" for u in users]
    assert len(fake.requests) == 20
    assert {r.api for r in fake.requests} == {"responses", "chat_completions"}


async def test_echo_responder_answers_a_tool_result(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    fake.responder = echo_responder
    tool_output = {"type": "function_call_output", "call_id": "call_1", "output": "42"}
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    response = await client.responses.create(
        model="m",
        input=[{"role": "user", "content": "compute"}, call, tool_output],  # type: ignore[list-item]
    )

    assert response.output_text == "tool said: 42"


async def test_request_readers_on_multi_turn_inputs(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    await client.responses.create(
        model="gpt-4.1",
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "second "},
                    {"type": "input_text", "text": "question"},
                ],
            },
        ],
        tools=[{"type": "function", "name": "search", "parameters": {}, "strict": False}],
    )
    await client.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "clock", "arguments": "{}"},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_9",
                "content": [{"type": "text", "text": "noon"}],
            },
        ],
        tools=[{"type": "function", "function": {"name": "clock", "parameters": {}}}],
    )

    responses, chat = fake.requests
    assert responses.model == "gpt-4.1"
    assert responses.instructions == "Be brief."
    assert responses.user_texts == ["first question", "second question"]
    assert responses.last_user_text == "second question"
    assert responses.input_item_count == 3
    assert responses.tool_names == ["search"]
    assert not responses.ends_with_tool_result and responses.tool_result_text is None
    assert chat.instructions == "Be kind."
    assert chat.last_user_text == "hello"
    assert chat.input_item_count == 4
    assert chat.tool_names == ["clock"]
    assert chat.ends_with_tool_result and chat.tool_result_text == "noon"
    assert chat.tool_results == ["noon"]


async def test_queue_comes_before_responder_then_default(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    seen: list[RecordedRequest] = []

    def responder(request: RecordedRequest) -> Reply:
        seen.append(request)
        return Reply.text("from responder")

    fake.enqueue(Reply.text("queued"))
    fake.responder = responder

    first = await client.responses.create(model="m", input="1")
    second = await client.responses.create(model="m", input="2")
    fake.responder = None
    third = await client.responses.create(model="m", input="3")

    assert [first.output_text, second.output_text, third.output_text] == [
        "queued",
        "from responder",
        "fake reply",
    ]
    assert [request.last_user_text for request in seen] == ["2"]


async def test_responder_failure_becomes_a_500_with_its_message(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise LookupError("no script for this user")

    fake.responder = broken

    with pytest.raises(openai.InternalServerError, match="no script for this user"):
        await client.responses.create(model="m", input="x")


async def test_reset_forgets_queue_responder_and_records(
    fake: FakeLLM, client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(Reply.text("stale"))
    fake.responder = echo_responder
    await client.responses.create(model="m", input="x")
    fake.enqueue(Reply.text("stale too"))

    fake.reset()

    assert fake.requests == []
    assert fake.pending_replies == 0
    assert fake.responder is None
    response = await client.responses.create(model="m", input="x")
    assert response.output_text == "fake reply"


async def test_unknown_routes_and_bad_bodies_get_json_errors(fake: FakeLLM) -> None:
    fake.enqueue(Reply.text("kept for later"))
    async with httpx2.AsyncClient(base_url=fake.base_url) as http:
        missing = await http.get("/models")
        not_json = await http.post("/responses", content=b"not json")

    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert not_json.status_code == 400
    assert fake.pending_replies == 1
    assert [request.api for request in fake.requests] == [None, "responses"]
    assert fake.model_requests() == fake.requests[1:]


async def test_serves_while_the_test_loop_is_blocked(fake: FakeLLM) -> None:
    fake.enqueue(Reply.text("answered from another thread"))
    with openai.OpenAI(base_url=fake.base_url, api_key="test-key", max_retries=0) as client:
        # A blocking call on the test's own loop: only a fake with its own loop can answer it.
        response = client.responses.create(model="m", input="x")

    assert response.output_text == "answered from another thread"


async def test_channels_keep_their_scripts_and_records_apart(fake: FakeLLM) -> None:
    first, second = fake.channel("module-a"), fake.channel("module-b")
    assert fake.channel("module-a") is first
    assert first.base_url == f"http://127.0.0.1:{fake.port}/c/module-a/v1"
    first.enqueue(Reply.text("for a"))
    second.responder = lambda request: Reply.text(f"b got {request.model}")
    fake.enqueue(Reply.text("for the server itself"))
    try:
        async with first.client() as a, second.client() as b, fake.client() as root:
            answer_b = await b.responses.create(model="mb", input="x")
            answer_a = await a.responses.create(model="ma", input="x")
            answer_root = await root.responses.create(model="mr", input="x")
            again_a = await a.responses.create(model="ma", input="x")

        assert answer_a.output_text == "for a"
        assert again_a.output_text == fake.default_reply.joined_text
        assert answer_b.output_text == "b got mb"
        assert answer_root.output_text == "for the server itself"
        assert [r.model for r in first.model_requests()] == ["ma", "ma"]
        assert [r.model for r in second.model_requests()] == ["mb"]
        assert [r.model for r in fake.model_requests()] == ["mr"]
        assert {r.path for r in first.requests} == {"/v1/responses"}
        with pytest.raises(RuntimeError):
            first.stop()
    finally:
        first.reset()
        second.reset()


async def test_an_unknown_channel_is_a_json_404(fake: FakeLLM) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{fake.port}/c/nobody/v1/responses", json={"model": "m"}
        )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []
    with pytest.raises(ValueError):
        fake.channel("a/b")


def test_reply_validation() -> None:
    with pytest.raises(ValueError):
        Reply.text("x", cut_after=-1)
    with pytest.raises(ValueError):
        Reply.error(200)
    with pytest.raises(ValueError):
        Reply.text("x", chunk_size=0)
    assert Reply.text("abcdefghij", chunk_size=4).chunks == ("abcd", "efgh", "ij")
    assert Reply.text("x").with_faults(hang=True).hang


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
