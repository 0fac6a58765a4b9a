"""OTEL_EXPORTER_OTLP_ENDPOINT turns tracing on: a real server process sends its spans over
OTLP/HTTP to a receiver on loopback, under OTEL_SERVICE_NAME, with nothing secret in them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app.agent.offline_model import OFFLINE_MODEL_NAME
from app.observability.tracing import REQUEST_ID_ATTRIBUTE
from tests.e2e.harness import ServerProcess
from tests.server_fixtures import ClientFactory

SERVICE_NAME = f"otlp-test-{uuid.uuid4().hex[:8]}"


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every export it is sent."""

    server: ThreadingHTTPServer
    exports: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def requests(self) -> list[ExportTraceServiceRequest]:
        decoded = []
        for _, _, body in list(self.exports):
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            decoded.append(request)
        return decoded


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    exports: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            exports.append((self.path, self.headers.get("content-type", ""), body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(server, exports)
    server.shutdown()
    thread.join(10)


@pytest.fixture(scope="module")
def traced_server(
    server_env: dict[str, str], receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = ServerProcess(
        env={
            **server_env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": SERVICE_NAME,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export batches every 0.2 s, not 5 s
        },
        log_path=tmp_path_factory.mktemp("otlp") / "server.log",
    )
    process.start()
    yield process
    process.stop()


async def test_spans_reach_the_otlp_endpoint_without_text_or_token(
    traced_server: ServerProcess, receiver: Receiver, make_client: ClientFactory
) -> None:
    secret_title = f"secret errand {uuid.uuid4().hex}"
    client = make_client(traced_server.base_url)
    request_id = f"otlp-{uuid.uuid4().hex[:12]}"
    client.http.headers["X-Request-ID"] = request_id
    reply = await client.send(f"add task {secret_title}")
    assert secret_title in reply.assistant_text()

    deadline = time.monotonic() + 20
    while True:
        spans = [
            (resource_spans.resource, span)
            for request in receiver.requests()
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        names = {span.name for _, span in spans}
        if {"POST /api/chatkit", "chat.turn", f"chat {OFFLINE_MODEL_NAME}"} <= names and any(
            name.startswith("execute_tool add_task") for name in names
        ):
            break
        assert time.monotonic() < deadline, sorted(names)
        time.sleep(0.2)

    assert all(path == "/v1/traces" for path, _, _ in receiver.exports)
    assert all(kind == "application/x-protobuf" for _, kind, _ in receiver.exports)
    services = {
        attribute.value.string_value
        for resource, _ in spans
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {SERVICE_NAME}
    turn = next(span for _, span in spans if span.name == "chat.turn")
    attributes = {a.key: a.value.string_value for a in turn.attributes}
    assert attributes[REQUEST_ID_ATTRIBUTE] == request_id
    # Whatever was exported: never the message text (also the task title) nor the token.
    for _, _, body in receiver.exports:
        assert secret_title.encode() not in body
        assert client.token.encode() not in body
        assert client.token.split(".")[2].encode() not in body
