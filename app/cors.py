"""CORS for the ChatKit web component: listed origins may send any request header."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOWED_METHODS = "GET, POST, PUT, OPTIONS"
EXPOSED_HEADERS = "X-Request-ID, Retry-After"
PREFLIGHT_MAX_AGE_SECONDS = 600
# A response that depends on these request headers must not be cached across origins.
_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class ChatKitCors:
    """Answers preflights from listed origins and labels their responses; others get nothing.

    The component adds headers of its own (`chatkit-frame-instance-id`, and more over time), so
    a preflight from a listed origin is granted whatever headers it asks for: what protects the
    API is the bearer token, which a page on another origin can only send if CORS lets it, and
    CORS lets only listed origins. `*` lists every origin (no credentials are ever allowed).
    """

    def __init__(self, app: ASGIApp, *, origins: Iterable[str]) -> None:
        self.app = app
        listed = {origin.rstrip("/") for origin in origins}
        self.any_origin = "*" in listed
        self.origins = frozenset(listed - {"*"})

    def _allowed(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def _allow_origin_value(self, origin: str) -> str:
        return "*" if self.any_origin else origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or not self._allowed(origin):
            # Not a cross-origin request we serve: no CORS headers at all, so the browser
            # refuses to hand the response to the page.
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(headers, origin, send)
            return

        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers["Access-Control-Allow-Origin"] = self._allow_origin_value(origin)
                response_headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
                if not self.any_origin:
                    response_headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, labelled)

    async def _preflight(self, headers: Headers, origin: str, send: Send) -> None:
        grant = [
            (b"access-control-allow-origin", self._allow_origin_value(origin).encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_SECONDS).encode()),
            (b"vary", _VARY.encode()),
            (b"content-length", b"0"),
        ]
        requested = headers.get("access-control-request-headers")
        if requested:
            grant.append((b"access-control-allow-headers", requested.encode("latin-1")))
        if headers.get("access-control-request-private-network") == "true":
            # A page on a listed origin may reach this server on a private address.
            grant.append((b"access-control-allow-private-network", b"true"))
        await send({"type": "http.response.start", "status": 204, "headers": grant})
        await send({"type": "http.response.body", "body": b""})
