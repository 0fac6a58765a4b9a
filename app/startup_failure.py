"""Startup failures that are reported as one log line, not as a traceback.

Starlette answers any exception raised while the lifespan starts with `lifespan.startup.failed`
carrying the formatted traceback, which uvicorn logs. For a failure the app has already
explained in one line (the database never answered), that traceback is noise that buries the
line. The middleware below holds the failure message back and, for a `StartupAbort`, sends it
without the traceback; uvicorn then exits with its startup-failure code (3).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StartupAbort(Exception):
    """Startup cannot go on; the reason has been logged as one line already."""


class QuietStartupAbort:
    """ASGI middleware: a `StartupAbort` in the lifespan fails startup without a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_startup_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)  # sent below, once the exception is known
                return
            await send(message)

        try:
            await self.app(scope, receive, hold_startup_failure)
        except StartupAbort:
            await send({"type": "lifespan.startup.failed", "message": ""})
            return
        except BaseException:
            for message in held:
                await send(message)
            raise
        for message in held:
            await send(message)
