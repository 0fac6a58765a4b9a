"""The ASGI app `app.main:app` (built on first access) and `create_app()`: wiring only."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx2
from agents import set_tracing_disabled
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from starlette.routing import Route
from starlette.types import ASGIApp

from app import __version__
from app.agent.provider import build_model
from app.api import attachments as attachment_routes
from app.api import chatkit, health, playground
from app.api import metrics as metrics_route
from app.api import tasks as task_routes
from app.api.openapi import install_openapi
from app.auth.factory import build_verifier, describe_auth_mode
from app.chat.admission import Admission, admission_policy
from app.chat.attachments import attachments_on_sql
from app.chat.composer import composer_features
from app.chat.inflight import StreamGate
from app.chat.server import ChatServer
from app.chat.shutdown import StreamCutter, grace_on_signals
from app.cors import ChatKitCors
from app.errors import install_error_handlers
from app.logging import configure_logging
from app.middleware import LateMount, RequestIdMiddleware
from app.observability.agent_calls import ObservedModel
from app.observability.http import HttpObservabilityMiddleware
from app.observability.metrics import Metrics
from app.observability.tracing import (
    install_tracer_provider,
    instrument_app,
    instrument_engine,
    provider_from_settings,
    uninstrument_engines,
)
from app.settings import Settings, load_settings
from app.startup_failure import QuietStartupAbort
from app.store.database import create_engine, prepare_database
from app.store.usage import UsageStore
from app.tools.mcp_connection import McpConnector

logger = logging.getLogger(__name__)

MCP_MOUNT_PATH = "/mcp"
API_DESCRIPTION = (
    "One endpoint, POST /api/chatkit, speaks the ChatKit protocol: a JSON body "
    '{"type": <op>, "params": {...}} with Authorization: Bearer <JWT>. Errors are '
    '{"type", "message", "status_code"}.'
)
SHUTDOWN_SAVE_SECONDS = 10.0
# Allocations of container objects between two young collections (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


# The embedded MCP server is called in-process under this name: `.invalid` never resolves, so
# no request meant for it can leave the process, whatever address or port the app is served on.
EMBEDDED_MCP_HOST = "todo.embedded.invalid"
LOOPBACK_ANY_PORT = ("127.0.0.1:*", "localhost:*", "[::1]:*")


def embedded_connector(
    mcp_app: ASGIApp, timeout_seconds: float, *, metrics: Metrics | None = None
) -> McpConnector:
    """A connector that reaches the embedded MCP app through an ASGI transport, not a socket."""
    return McpConnector(
        f"http://{EMBEDDED_MCP_HOST}{MCP_MOUNT_PATH}",
        timeout_seconds,
        transport=httpx2.ASGITransport(app=mcp_app),
        metrics=metrics,
    )


def settle_heap() -> None:
    """Move what startup built (modules, types, schemas: some 250,000 objects that live as long
    as the process) out of the garbage collector's sight, so a full collection under load walks
    only the objects of requests. Collections come less often, too: a turn allocates many
    short-lived containers, and each young collection has a fixed cost."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def create_app(
    settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the app; resources are created in the lifespan, not here.

    `tracer_provider` replaces the OTLP exporter that OTEL_EXPORTER_OTLP_ENDPOINT would make.
    """
    settings = settings or load_settings()
    embedded_mcp = LateMount() if settings.mcp_server_url is None else None
    metrics = Metrics() if settings.metrics else None
    own_provider = provider_from_settings(settings) if tracer_provider is None else None
    tracing = tracer_provider or own_provider

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(level=settings.log_level, json_lines=settings.log_json)
        set_tracing_disabled(not settings.agents_tracing)
        if "*" in settings.cors_origins:
            logger.warning(
                "cors.any_origin: CORS_ORIGINS=* lets a page on any origin call this API with "
                "a token it holds; list your app's origins instead"
            )
        async with AsyncExitStack() as stack:
            if own_provider is not None:
                stack.callback(own_provider.shutdown)  # last: sends the spans still buffered
            if metrics is not None:
                stack.callback(metrics.close)
            engine = create_engine(
                settings.database_url,
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
                pool_timeout=settings.database_pool_timeout,
                pooler=settings.database_pooler,
                statement_timeout=settings.database_statement_timeout or None,
            )
            stack.push_async_callback(engine.dispose)
            if metrics is not None:
                pool_limit = settings.database_pool_size + settings.database_max_overflow
                metrics.watch_pool(engine, limit=pool_limit)
            if tracing is not None:
                instrument_engine(engine, tracing)
                stack.callback(uninstrument_engines)
            await prepare_database(engine, settings)  # waits for it, then AUTO_MIGRATE
            verifier = build_verifier(settings)
            stack.push_async_callback(verifier.aclose)
            model = build_model(settings)
            stack.push_async_callback(model.aclose)

            if embedded_mcp is not None:
                from app.todo_mcp.server import build_todo_mcp

                todo = build_todo_mcp(
                    verifier=verifier,
                    engine=engine,
                    # Whatever port the process is served on, plus the in-process name.
                    public_url_hosts=[*LOOPBACK_ANY_PORT, EMBEDDED_MCP_HOST],
                    port=settings.port,
                    path=MCP_MOUNT_PATH,
                    calls_per_window=settings.todo_mcp_calls_per_minute,
                    stream_idle_seconds=settings.todo_mcp_stream_idle_seconds,
                )
                await stack.enter_async_context(todo.running())
                embedded_mcp.target = todo.asgi_app
                connector = embedded_connector(todo.asgi_app, settings.mcp_timeout, metrics=metrics)
            else:
                assert settings.mcp_server_url is not None
                connector = McpConnector(
                    settings.mcp_server_url, settings.mcp_timeout, metrics=metrics
                )
            stack.push_async_callback(connector.aclose)

            app.state.settings = settings
            app.state.engine = engine
            app.state.verifier = verifier
            store, attachments = attachments_on_sql(engine, settings)
            app.state.attachments = attachments
            inflight = StreamGate(settings.max_concurrent_turns, metrics=metrics)
            admission = app.state.admission = Admission(
                store=store,
                usage=UsageStore(engine),
                gate=inflight,
                policy=admission_policy(settings),
            )
            stack.push_async_callback(admission.aclose)
            app.state.chat_server = ChatServer(
                store=store,
                model=ObservedModel(
                    model.model,
                    api=model.api,
                    system=model.provider,
                    model_name=model.name,
                    metrics=metrics,
                ),
                mcp=connector,
                history_limit=settings.history_limit,
                titles=model.titles,
                tracing=settings.agents_tracing,
                metrics=metrics,
                attachments=attachments,
                features=composer_features(settings, model, metrics=metrics),
            )
            logger.info(
                "server.started",
                extra={
                    "model_provider": model.provider,
                    "model": model.name,
                    "model_api": model.api,
                    "auth": describe_auth_mode(settings),
                    "database": "postgresql" if settings.is_postgres else "sqlite",
                    "mcp": "embedded" if embedded_mcp is not None else "external",
                },
            )
            cutter = app.state.stream_cutter = StreamCutter(settings.shutdown_grace_seconds)
            settle_heap()
            with grace_on_signals(cutter):
                yield
            # Streams that outlived the grace were cut; let their saves finish before the
            # engine and connections they write through are closed.
            logger.info("server.stopping", extra={"streams_open": inflight.count})
            if not await inflight.wait_idle(SHUTDOWN_SAVE_SECONDS):
                logger.warning("server.streams_abandoned", extra={"streams_open": inflight.count})

    app = FastAPI(
        title="ChatKit agent server",
        description=API_DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # our own page (no CDN), from install_openapi
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(chatkit.router)
    app.include_router(attachment_routes.router)
    app.include_router(task_routes.router)
    if settings.docs:
        install_openapi(app)
    app.include_router(playground.router)
    app.include_router(metrics_route.router)
    if embedded_mcp is not None:
        # A Route, not a Mount: a Mount answers a POST to exactly /mcp with a 307 redirect.
        app.router.routes.append(Route(MCP_MOUNT_PATH, endpoint=embedded_mcp))
    if settings.cors_origins:
        app.add_middleware(ChatKitCors, origins=settings.cors_origins)
    app.add_middleware(HttpObservabilityMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    if tracing is not None:
        install_tracer_provider(tracing)
        instrument_app(app, tracing)
    app.add_middleware(QuietStartupAbort)  # a database that never answered: one line, no traceback
    return app


def __getattr__(name: str) -> FastAPI:
    """`app.main:app`, the attribute `uvicorn app.main:app` loads: built from the environment's
    settings on first access (not at import, which reads and makes nothing), then kept."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        built = create_app()
    except AttributeError as exc:
        # A bug while building must not read as "no attribute app" (what uvicorn would say).
        raise RuntimeError("building app.main:app failed") from exc
    globals()["app"] = built
    return built
