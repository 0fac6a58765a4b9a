"""OpenTelemetry spans of a real turn: the app runs in this process on a real uvicorn (a thread),
over real HTTP, a real Postgres and the embedded MCP server, with an in-memory span exporter.

Checked: span names, the parent/child structure request -> turn -> model call / tool call ->
outbound HTTP, the request id on each of ours, and that no span carries the message text, the
answer or the bearer token, even with every request header captured.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from app.auth.shared_secret import SharedSecretVerifier
from app.observability.tracing import REQUEST_ID_ATTRIBUTE, build_tracer_provider
from tests.e2e.harness import ChatKitClient, InProcessServer
from tests.fake_llm import FakeLLM, Reply
from tests.server_fixtures import SECRET

MODEL = "gpt-4o-mini"
CAPTURE_ALL_HEADERS = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def server(
    postgres_url: str,
    fake: FakeLLM,
    exporter: InMemorySpanExporter,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessServer]:
    # An operator asking for every request header must still never get the Authorization one.
    previous = os.environ.get(CAPTURE_ALL_HEADERS)
    os.environ[CAPTURE_ALL_HEADERS] = ".*"
    provider = build_tracer_provider(exporter, service_name="tracing-test", batch=False)
    running = InProcessServer(
        env={
            "DATABASE_URL": postgres_url,
            "AUTH_JWT_SECRET": SECRET,
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "test-key",
            "OPENAI_MODEL": MODEL,
            "OPENAI_MAX_RETRIES": "0",
            "THREAD_TITLES": "first_words",
            "RATE_LIMIT_TURNS_PER_MINUTE": "0",
            "DATA_DIR": str(tmp_path_factory.mktemp("tracing")),
        },
        log_path=tmp_path_factory.mktemp("tracing-logs") / "server.log",
        tracer_provider=provider,
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        if previous is None:
            os.environ.pop(CAPTURE_ALL_HEADERS, None)
        else:
            os.environ[CAPTURE_ALL_HEADERS] = previous


@pytest.fixture(autouse=True)
def fresh(fake: FakeLLM, exporter: InMemorySpanExporter) -> None:
    fake.reset()
    exporter.clear()


async def _turn(
    server: InProcessServer, minter: SharedSecretVerifier, text: str
) -> tuple[str, str, Any]:
    """One threads.create turn with a known request id; returns (request id, token, result)."""
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    token = minter.mint(f"user-{uuid.uuid4().hex}")
    client = ChatKitClient(server.base_url, token)
    client.http.headers["X-Request-ID"] = request_id
    try:
        result = await client.send(text)
    finally:
        await client.aclose()
    assert result.status == 200
    assert result.headers["x-request-id"] == request_id
    return request_id, token, result


async def _spans_of(exporter: InMemorySpanExporter, request_id: str) -> list[ReadableSpan]:
    """The finished spans of the trace whose server span carries `request_id`."""
    deadline = time.monotonic() + 10
    while True:
        spans = list(exporter.get_finished_spans())
        roots = [
            s
            for s in spans
            if s.kind == SpanKind.SERVER
            and (s.attributes or {}).get(REQUEST_ID_ATTRIBUTE) == request_id
        ]
        if roots:
            assert roots[0].context is not None
            trace_id = roots[0].context.trace_id
            return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
        assert time.monotonic() < deadline, f"no server span for {request_id}"
        await asyncio.sleep(0.05)


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


def _ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> set[int]:
    by_id = {_span_id(s): s for s in spans}
    found: set[int] = set()
    parent = _parent_id(span)
    while parent is not None and parent not in found:
        found.add(parent)
        parent = _parent_id(by_id[parent]) if parent in by_id else None
    return found


def _everything_recorded(span: ReadableSpan) -> list[str]:
    """Every text a span would export: attributes, event attributes, status description."""
    texts = [f"{key}={value!r}" for key, value in (span.attributes or {}).items()]
    for event in span.events:
        texts.append(event.name)
        texts.extend(f"{key}={value!r}" for key, value in (event.attributes or {}).items())
    if span.status.description:
        texts.append(span.status.description)
    return texts


async def test_a_tool_turn_is_one_trace_request_turn_model_tool_http(
    server: InProcessServer,
    fake: FakeLLM,
    exporter: InMemorySpanExporter,
    minter: SharedSecretVerifier,
) -> None:
    secret_text = f"water the plants {uuid.uuid4().hex}"
    answer = f"Added it {uuid.uuid4().hex}."
    fake.enqueue(Reply.tool_call("add_task", {"title": "water plants"}), Reply.text(answer))
    request_id, token, result = await _turn(server, minter, secret_text)
    assert result.assistant_text() == answer

    spans = await _spans_of(exporter, request_id)
    request = _one(spans, "POST /api/chatkit")
    assert request.kind == SpanKind.SERVER
    assert request.parent is None

    turn = _one(spans, "chat.turn")
    assert _parent_id(turn) == _span_id(request)
    assert turn.attributes is not None
    assert turn.attributes[REQUEST_ID_ATTRIBUTE] == request_id
    assert turn.attributes["app.turn.outcome"] == "ok"

    model_calls = [s for s in spans if s.name == f"chat {MODEL}"]
    assert len(model_calls) == 2  # the tool call, then the answer
    for call in model_calls:
        assert _parent_id(call) == _span_id(turn)
        assert call.kind == SpanKind.CLIENT
        assert call.attributes is not None
        assert call.attributes[REQUEST_ID_ATTRIBUTE] == request_id
        assert call.attributes["gen_ai.system"] == "openai"
        assert call.attributes["app.model_api"] == "responses"
        assert call.status.status_code != StatusCode.ERROR

    tool = _one(spans, "execute_tool add_task")
    assert _parent_id(tool) == _span_id(turn)
    assert tool.attributes is not None
    assert tool.attributes[REQUEST_ID_ATTRIBUTE] == request_id
    assert tool.attributes["app.tool.outcome"] == "ok"
    # The tool ran between the two model calls.
    assert tool.start_time is not None and tool.end_time is not None
    starts = sorted(call.start_time or 0 for call in model_calls)
    assert starts[0] < tool.start_time < tool.end_time <= starts[1]

    outbound = [s for s in spans if s.kind == SpanKind.CLIENT and s.name == "POST"]
    assert len(outbound) == 2  # the model API, once per model call
    model_ids = {_span_id(call) for call in model_calls}
    for http in outbound:
        assert _parent_id(http) in model_ids
        assert http.attributes is not None
        assert http.attributes["url.full"] == f"{fake.base_url}/responses"
        assert http.attributes["http.response.status_code"] == 200
    # The fake model saw the trace context of the HTTP span.
    assert all("traceparent" in request.headers for request in fake.model_requests())

    statements = [s for s in spans if (s.attributes or {}).get("db.system") == "postgresql"]
    # The turn's own writes and the tool's (the embedded TODO server, in-process) are in it.
    assert any(_span_id(turn) in _ancestors(s, spans) for s in statements)
    assert any(_span_id(tool) in _ancestors(s, spans) for s in statements)

    # Nothing in any span of the trace carries the text, the answer or the token.
    # Header capture is on (the request id header is there); the Authorization one is scrubbed.
    assert request.attributes is not None
    assert request.attributes["http.request.header.x_request_id"] == (request_id,)
    assert request.attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert request.attributes[REQUEST_ID_ATTRIBUTE] == request_id
    for span in spans:
        for recorded in _everything_recorded(span):
            assert secret_text not in recorded, (span.name, recorded)
            assert answer not in recorded, (span.name, recorded)
            assert token not in recorded, (span.name, recorded)
            assert token.split(".")[2] not in recorded, (span.name, recorded)


async def test_a_failed_model_call_marks_the_model_and_turn_spans_without_messages(
    server: InProcessServer,
    fake: FakeLLM,
    exporter: InMemorySpanExporter,
    minter: SharedSecretVerifier,
) -> None:
    provider_message = f"upstream exploded {uuid.uuid4().hex}"
    fake.enqueue(Reply.error(500, provider_message))
    request_id, token, result = await _turn(server, minter, "hello")
    assert result.of_type("error")

    spans = await _spans_of(exporter, request_id)
    turn = _one(spans, "chat.turn")
    model = _one(spans, f"chat {MODEL}")
    assert _parent_id(model) == _span_id(turn)
    assert model.status.status_code == StatusCode.ERROR
    assert model.attributes is not None
    assert model.attributes["error.type"] == "http_5xx"
    assert turn.status.status_code == StatusCode.ERROR
    assert turn.attributes is not None
    assert turn.attributes["app.turn.outcome"] == "error"
    # Exception messages are not recorded: the provider's text could quote the input.
    for span in spans:
        for recorded in _everything_recorded(span):
            assert provider_message not in recorded, (span.name, recorded)
            assert token not in recorded, (span.name, recorded)


async def test_probes_and_scrapes_make_no_spans(
    server: InProcessServer, exporter: InMemorySpanExporter
) -> None:
    import httpx2

    async with httpx2.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/metrics")).status_code == 404  # METRICS=false here
        assert (await http.get("/nope")).status_code == 404
    await asyncio.sleep(0.2)
    names = [s.name for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert names == ["GET"], names  # only the unknown path, under its method (no raw path)
