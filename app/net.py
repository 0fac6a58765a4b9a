"""Outbound HTTP transports of the server (model API, MCP, JWKS)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, StatusCode

# A request's headers and body can leave as two small writes; without TCP_NODELAY the second
# waits for the peer's delayed ACK (~40 ms on Linux) on every reused keep-alive connection.
NO_DELAY_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


# Idle pooled connections are dropped after 4 s. Servers on uvicorn (local model servers, MCP
# servers, this one) close theirs after 5 s idle; httpx's own 5 s met them at the same moment, and
# a request sent on a connection its server was just closing failed with a reset.
KEEPALIVE_EXPIRY_SECONDS = 4.0


def connection_limits(**kwargs: Any) -> httpx2.Limits:
    """httpx's pool limits with our keep-alive expiry (other limits as given, else httpx's)."""
    return httpx2.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS, **kwargs)


def outbound_transport(
    *, limits: httpx2.Limits | None = None, **kwargs: Any
) -> httpx2.AsyncBaseTransport:
    """A connection pool whose sockets send small writes at once; traced when tracing is on."""
    return TracedTransport(
        httpx2.AsyncHTTPTransport(
            socket_options=NO_DELAY_SOCKET_OPTIONS, limits=limits or connection_limits(), **kwargs
        )
    )


class TracedTransport(httpx2.AsyncBaseTransport):
    """A client span per outbound request (method, host, path, status: no query, no headers).

    openai, mcp and agents use httpx2, which OpenTelemetry's httpx instrumentation does not see.
    The span ends when the response body is closed, so a streamed answer is timed to its end.
    The trace context is passed on in `traceparent`, so a traced peer continues the trace.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        span = trace.get_tracer(__name__).start_span(
            request.method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": request.method,
                "server.address": url.host,
                "server.port": url.port or (443 if url.scheme == "https" else 80),
                "url.full": f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}",
            },
        )
        if not span.is_recording():
            return await self._inner.handle_async_request(request)
        propagate.inject(request.headers, context=trace.set_span_in_context(span))
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            span.end()
            raise
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            span.set_status(StatusCode.ERROR, str(response.status_code))
        response.stream = _EndSpanOnClose(response.stream, span)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _EndSpanOnClose(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, span: Span) -> None:
        self._inner = inner
        self._span = span

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._span.end()
