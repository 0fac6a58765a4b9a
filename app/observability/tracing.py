"""OpenTelemetry traces: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

Spans: one per HTTP request (the FastAPI instrumentation), one per turn, per model call, per
tool call (ours, in `app.observability.agent_calls`), per outbound HTTP request (`app.net`) and
per SQL statement (the SQLAlchemy instrumentation). Our spans carry the request id. What must
never be in an attribute: message text, tool arguments, tokens (the Authorization header is
scrubbed even when header capture is switched on by the OTEL_INSTRUMENTATION_* variables),
SQL parameters (the SQLAlchemy instrumentation records the statement with its placeholders).

The OpenTelemetry API keeps one tracer provider per process: spans made anywhere through
`trace.get_tracer()` go to the provider installed here, or nowhere when none is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from app.logging import request_id_var

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.settings import Settings

logger = logging.getLogger(__name__)

TRACER_NAME = "chatkit-agent-server"
REQUEST_ID_ATTRIBUTE = "app.request_id"
# Never captured, whatever OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* ask for.
SENSITIVE_HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"]
# Probes and scrapes would drown the traces that matter.
UNTRACED_URLS = "/health$,/ready$,/metrics$"


def tracer() -> trace.Tracer:
    """The tracer of our own spans (a no-op one while no provider is installed)."""
    return trace.get_tracer(TRACER_NAME)


def request_id_attributes() -> dict[str, str]:
    """The request id of the current request as a span attribute, if there is one."""
    request_id = request_id_var.get()
    return {REQUEST_ID_ATTRIBUTE: request_id} if request_id != "-" else {}


def build_tracer_provider(
    exporter: SpanExporter, *, service_name: str, batch: bool = True
) -> TracerProvider:
    """A provider that hands finished spans to `exporter` (in batches, off the event loop)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    return provider


def otlp_traces_endpoint(base: str) -> str:
    """The OTLP/HTTP traces URL for the base URL of OTEL_EXPORTER_OTLP_ENDPOINT."""
    return base.rstrip("/") + "/v1/traces"


def provider_from_settings(settings: Settings) -> TracerProvider | None:
    """An OTLP/HTTP exporting provider when OTEL_EXPORTER_OTLP_ENDPOINT is set, else None."""
    if not settings.otel_exporter_otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=otlp_traces_endpoint(settings.otel_exporter_otlp_endpoint))
    return build_tracer_provider(exporter, service_name=settings.otel_service_name)


def install_tracer_provider(provider: TracerProvider) -> None:
    """Make `provider` the process's provider; the API allows this once per process."""
    current = trace.get_tracer_provider()
    if current is provider:
        return
    if isinstance(current, TracerProvider):
        logger.warning("tracing.provider_already_set")
        return
    trace.set_tracer_provider(provider)


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """A server span per HTTP request (request/response headers with secrets never recorded)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNTRACED_URLS,
        # One span per ASGI message would mean one per streamed token.
        exclude_spans=["receive", "send"],
        http_capture_headers_sanitize_fields=SENSITIVE_HEADERS,
    )


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    """A client span per SQL statement: the statement text, never its parameters."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        # One instrumentation per process (an earlier app in this process); start over.
        instrumentor.uninstrument()
    instrumentor.instrument(
        engine=engine.sync_engine,
        tracer_provider=provider,
        enable_commenter=False,
        # Its declared range stops below SQLAlchemy 2.1, whose cursor events it uses unchanged;
        # without this it instruments nothing (tests/e2e/test_tracing.py checks the SQL spans).
        skip_dep_check=True,
    )


def uninstrument_engines() -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
