"""The lean openai client sends and reads exactly what the plain one does, on the seams it uses."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import httpx2
import openai
import pytest
from agents import FunctionTool, ModelSettings, ModelTracing, OpenAIResponsesModel
from agents.items import TResponseInputItem
from openai import AsyncOpenAI
from openai._utils import PropertyInfo
from openai.types.beta.response_create_params import (
    ResponseCreateParamsStreaming as BetaResponseCreateParams,
)
from openai.types.responses import ResponseStreamEvent
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from openai.types.shared import Reasoning
from typing_extensions import get_type_hints, is_typeddict

from app.agent.openai_seams import (
    TESTED_OPENAI_RELEASE,
    LeanAsyncOpenAI,
    LeanResponses,
    lean_openai_supported,
    plain_body,
    stream_event_adapter,
)
from app.agent.provider import build_model
from app.settings import Settings
from tests.fake_llm import API_KEY, FakeLLM, RecordedRequest, Reply
from tests.fake_llm.wire import responses_frames

INSTRUCTIONS = "Answer briefly."
STREAM_EVENT: Any = ResponseStreamEvent  # what the client casts each streamed event to
TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "description": "What to do"},
        "due": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
    },
    "required": ["title", "due"],
    "additionalProperties": False,
}
HISTORY: list[TResponseInputItem] = [
    {"role": "user", "content": [{"type": "input_text", "text": "add milk"}]},
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "add_task",
        "arguments": '{"title": "milk", "due": null}',
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": '{"id": 7}'},
    {"type": "message", "role": "assistant", "content": "Added."},
    {"role": "user", "content": "and bread"},
]


class _RecordingResponses(LeanResponses):
    """Remembers the parameters the agents SDK passes to `create`."""

    async def create(self, **params: Any) -> Any:
        assert isinstance(self._client, _RecordingClient)
        self._client.created.append(params)
        return await super().create(**params)


class _RecordingClient(LeanAsyncOpenAI):
    created: list[dict[str, Any]]

    @functools.cached_property
    def responses(self) -> LeanResponses:
        self.created = []
        return _RecordingResponses(self)


def _clients(fake: FakeLLM, **options: Any) -> tuple[AsyncOpenAI, _RecordingClient]:
    common: dict[str, Any] = {"base_url": fake.base_url, "api_key": API_KEY, "max_retries": 0}
    return AsyncOpenAI(**common, **options), _RecordingClient(**common, **options)


def _task_tool() -> FunctionTool:
    async def invoke(context: Any, arguments: str) -> str:
        return arguments

    return FunctionTool(
        name="add_task",
        description="Add a task to the caller's list.",
        params_json_schema=TASK_SCHEMA,
        on_invoke_tool=invoke,
    )


async def _stream(client: AsyncOpenAI, settings: ModelSettings) -> list[str]:
    model = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client)
    events = model.stream_response(
        INSTRUCTIONS,
        HISTORY,
        settings,
        [_task_tool()],
        None,
        [],
        ModelTracing.DISABLED,
        previous_response_id=None,
        conversation_id=None,
        prompt=None,
    )
    return [type(event).__name__ async for event in events]


def _sent(request: RecordedRequest) -> tuple[dict[str, Any], dict[str, str]]:
    headers = {key.lower(): value for key, value in request.headers.items()}
    return request.json, headers


@pytest.mark.parametrize(
    "settings",
    [
        ModelSettings(),
        ModelSettings(tool_choice="add_task", temperature=0.2, metadata={"turn": "1"}),
        # A pydantic model in the body: the lean client leaves it to the transform.
        ModelSettings(reasoning=Reasoning(effort="low")),
    ],
    ids=["defaults", "forced-tool", "pydantic-value"],
)
async def test_requests_and_streams_are_the_same_as_the_plain_clients(
    settings: ModelSettings, fake: FakeLLM
) -> None:
    fake.reset()
    plain, lean = _clients(fake)
    replies = (Reply.tool_call("add_task", {"title": "bread", "due": None}), Reply.text("Ok."))
    results = []
    for client in (plain, lean):
        for reply in replies:
            fake.enqueue(reply)
            results.append(await _stream(client, settings))
    requests = fake.model_requests()
    await plain.close()
    await lean.close()
    assert results[:2] == results[2:]
    assert "ResponseCompletedEvent" in results[0]
    assert len(requests) == 4
    assert [_sent(r) for r in requests[:2]] == [_sent(r) for r in requests[2:]]
    assert lean.user_agent == plain.user_agent  # the agents SDK sets its own; titles do not
    # The agents SDK's own parameters are plain JSON: the transform is skipped for them.
    skipped = [plain_body(params) is not None for params in lean.created]
    assert skipped == [settings.reasoning is None] * 2


def _stream_events() -> Iterator[dict[str, Any]]:
    request = RecordedRequest(
        method="POST",
        path="/v1/responses",
        headers={},
        body=b"",
        json={"tools": [{"type": "function", "name": "add_task", "parameters": TASK_SCHEMA}]},
        time=0.0,
    )
    for reply in (Reply.tool_call("add_task", {"title": "x"}), Reply.text("Done, all good.")):
        for frame in responses_frames(reply, request):
            yield json.loads(frame.data.decode().split("data: ", 1)[1])


BROKEN_EVENTS: list[dict[str, Any]] = [
    {"type": "response.output_text.delta", "sequence_number": 1},  # fields missing
    {"type": "response.from_the_future", "sequence_number": 2, "x": 1},  # unknown type
    {"sequence_number": 3},  # no type at all
]


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_each_streamed_event_becomes_the_same_object(strict: bool) -> None:
    options: dict[str, Any] = {"api_key": "k", "_strict_response_validation": strict}
    plain, lean = AsyncOpenAI(**options), LeanAsyncOpenAI(**options)
    response = httpx2.Response(
        200, request=httpx2.Request("POST", "http://127.0.0.1:9/v1/responses")
    )
    hits = stream_event_adapter.cache_info().hits
    events = list(_stream_events())
    for data in [*events, *BROKEN_EVENTS]:
        outcomes: list[tuple[type[object], object]] = []
        for client in (plain, lean):
            try:
                parsed: object = client._process_response_data(
                    data=data, cast_to=STREAM_EVENT, response=response
                )
                outcomes.append((type(parsed), dict(vars(parsed))))
            except openai.APIResponseValidationError as exc:
                outcomes.append((type(exc), exc.body))
        assert outcomes[0] == outcomes[1], data
    # Every valid event took the discriminated adapter, and so did each broken one, first.
    assert stream_event_adapter.cache_info().hits - hits >= len(events) + len(BROKEN_EVENTS) - 1


def _walk(annotation: object, seen: dict[int, object]) -> Iterator[object]:
    """Every TypedDict and annotation metadata reachable from `annotation`."""
    if id(annotation) in seen:
        return
    seen[id(annotation)] = annotation  # kept alive, so that its id is not reused
    if is_typeddict(annotation):
        yield annotation
        for hint in get_type_hints(annotation, include_extras=True).values():
            yield from _walk(hint, seen)
        return
    if get_origin(annotation) is Annotated:
        yield from annotation.__metadata__  # type: ignore[attr-defined]
    for argument in get_args(annotation):
        yield from _walk(argument, seen)


def _renaming_or_formatting(params: type) -> tuple[int, list[PropertyInfo]]:
    """TypedDicts met, and the annotations that would make the transform change a value."""
    found = list(_walk(params, {}))
    typed_dicts = sum(1 for item in found if is_typeddict(item))
    changing = [
        item
        for item in found
        if isinstance(item, PropertyInfo) and (item.alias is not None or item.format is not None)
    ]
    return typed_dicts, changing


@pytest.mark.parametrize(
    "params", [ResponseCreateParamsStreaming, ResponseCreateParamsNonStreaming]
)
def test_the_create_parameters_have_nothing_for_the_transform_to_change(params: type) -> None:
    typed_dicts, changing = _renaming_or_formatting(params)
    assert typed_dicts > 50  # the walk reached the input items and tools
    assert changing == []


def test_the_walk_finds_a_renamed_parameter() -> None:
    _, changing = _renaming_or_formatting(BetaResponseCreateParams)
    assert [info.alias for info in changing] == ["openai-beta"]


def test_plain_body_keeps_plain_json_and_refuses_the_rest() -> None:
    body = plain_body({"model": "m", "input": [{"a": [1, 2.5, None, True]}], "stream": openai.omit})
    assert body == {"model": "m", "input": [{"a": [1, 2.5, None, True]}]}
    assert plain_body({"model": "m", "extra_headers": {"x": "1"}, "timeout": 3}) == {"model": "m"}
    assert plain_body({"model": "m", "input": [("a", "b")]}) is None
    assert plain_body({"model": "m", "metadata": {"k": openai.omit}}) is None
    assert plain_body({"model": "m", "no_such_parameter": 1}) is None


def test_installed_openai_is_the_tested_release() -> None:
    installed = version("openai")
    release = ".".join(str(part) for part in TESTED_OPENAI_RELEASE)
    assert installed.startswith(release + "."), (
        f"openai {installed} is not {release}.x: re-check app/agent/openai_seams.py"
    )
    assert lean_openai_supported()


async def test_the_provider_builds_the_lean_client(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, openai_base_url="http://127.0.0.1:9/v1")
    choice = build_model(settings)
    assert type(choice.client) is LeanAsyncOpenAI
    await choice.aclose()
