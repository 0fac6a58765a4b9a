"""Servers for the composer-feature tests: a fake model with an independent MCP server each.

`features_server`: the fake model, the recording MCP server, two models users may pick,
operator instructions, dictation with small caps. `plain_server`: the fake model and an MCP
server answering in other shapes (JSON text lists, string ids, status strings). The embedded
MCP server is exercised through the session's `offline_server` (offline model).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from chatkit.types import ThreadStreamEvent
from pydantic import TypeAdapter

from tests.chat_features.plain_todo_mcp import RunningPlainTodo, serve_plain_todo
from tests.e2e.harness import ChatKitClient, InProcessServer, StreamResult, sse_frames
from tests.fake_llm import FakeLLM
from tests.recording_mcp import RunningMcp, serve_recording_mcp
from tests.server_fixtures import SECRET

DEFAULT_MODEL = "model-a"
OTHER_MODEL = "model-b"
TRANSCRIBE_MODEL = "transcriber-test"
MAX_BODY_BYTES = 65_536
TRANSCRIBE_MAX_BYTES = 131_072
OPERATOR_GUIDANCE = "Sign every answer with the word Toodles."
EVENT_ADAPTER: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)


@pytest.fixture(scope="package")
def fake(fake_llm_server: FakeLLM) -> FakeLLM:
    """The package's own fake model: a channel of the session's fake model server."""
    return fake_llm_server.channel("chat_features")


@pytest.fixture(scope="package")
def recording() -> Iterator[RunningMcp]:
    with serve_recording_mcp(SECRET) as running:
        yield running


@pytest.fixture(scope="package")
def plain_mcp() -> Iterator[RunningPlainTodo]:
    with serve_plain_todo(SECRET) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_fake(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()
    if "plain_mcp" in request.fixturenames:
        request.getfixturevalue("plain_mcp").state.unreadable = False


def _model_env(fake: FakeLLM, mcp_url: str, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MODEL": DEFAULT_MODEL,
        "OPENAI_TIMEOUT": "5",
        "OPENAI_MAX_RETRIES": "0",
        "MCP_SERVER_URL": mcp_url,
        "MCP_TIMEOUT": "5",
        # Scripted replies are consumed in order: no title calls in between.
        "THREAD_TITLES": "first_words",
        **extra,
    }


@pytest.fixture(scope="package")
def features_server(
    server_env: dict[str, str],
    fake: FakeLLM,
    recording: RunningMcp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessServer]:
    env = _model_env(
        fake,
        recording.url,
        OPENAI_MODELS=f"{DEFAULT_MODEL},{OTHER_MODEL}",
        OPENAI_TRANSCRIBE_MODEL=TRANSCRIBE_MODEL,
        TRANSCRIBE_MAX_BYTES=str(TRANSCRIBE_MAX_BYTES),
        MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        AGENT_INSTRUCTIONS=OPERATOR_GUIDANCE,
    )
    server = InProcessServer(
        env={**server_env, **env}, log_path=tmp_path_factory.mktemp("logs") / "features.log"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def plain_server(
    server_env: dict[str, str],
    fake: FakeLLM,
    plain_mcp: RunningPlainTodo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessServer]:
    server = InProcessServer(
        env={**server_env, **_model_env(fake, plain_mcp.url)},
        log_path=tmp_path_factory.mktemp("logs") / "plain.log",
    )
    server.start()
    yield server
    server.stop()


def tag_input(*parts: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A message input with the given content parts and inference options."""
    return {"content": list(parts), "attachments": [], "inference_options": options}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


async def stream_with_headers(
    client: ChatKitClient, op: str, params: dict[str, Any], headers: dict[str, str]
) -> StreamResult:
    """`client.stream` with extra request headers (Accept-Language, ...)."""
    body = json.dumps({"type": op, "params": params})
    all_headers = {**client._headers(), **headers}
    async with client.http.stream("POST", "/api/chatkit", content=body, headers=all_headers) as r:
        assert r.status_code == 200, (r.status_code, await r.aread())
        frames = [frame async for frame in sse_frames(r)]
    events = [EVENT_ADAPTER.validate_json(frame) for frame in frames]
    return StreamResult(r.status_code, r.headers, events, [json.loads(f) for f in frames])


def widget_items(result: StreamResult) -> list[Any]:
    """The widget items an answer completed (thread.item.done)."""
    return [e.item for e in result.of_type("thread.item.done") if e.item.type == "widget"]


async def items_list(client: ChatKitClient, thread_id: str) -> list[dict[str, Any]]:
    page = await client.call("items.list", {"thread_id": thread_id, "limit": 50, "order": "asc"})
    return list(page["data"])


async def get_tasks(client: ChatKitClient, **params: Any) -> httpx2.Response:
    return await client.http.get(
        "/api/tasks", params=params, headers={"Authorization": f"Bearer {client.token}"}
    )
