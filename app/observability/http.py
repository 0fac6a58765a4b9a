"""HTTP request metrics and the request id on the request's span (pure ASGI, streaming-safe)."""

from __future__ import annotations

import time

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.metrics import UNMATCHED_ROUTE, Metrics
from app.observability.tracing import REQUEST_ID_ATTRIBUTE


def route_label(scope: Scope) -> str:
    """The template of the route that handled the request (`/api/chatkit`), never the raw path."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class HttpObservabilityMiddleware:
    """Counts and times each request by route template and status, to the end of its body.

    Sits inside RequestIdMiddleware (it reads the id that one chose) and outside the router
    (which records the matched route in the scope on the way in).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics | None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        span = trace.get_current_span()
        if request_id and span.is_recording():
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        if self.metrics is None:
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.http_request(
                scope["method"], route_label(scope), status, time.perf_counter() - started
            )
