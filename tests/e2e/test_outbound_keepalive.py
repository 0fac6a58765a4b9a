"""The server's outbound pools drop idle connections before a uvicorn-based peer closes them.

A peer on uvicorn (a local model server, an MCP server, the fake model of these tests) closes a
keep-alive connection after 5 s idle. httpx kept idle connections 5 s as well, so a request could
leave on a connection the peer was closing at that very moment and fail with a reset: one turn
of test_load_small failed so in CI ("The connection to the language model broke off").
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import uvicorn

from app.agent.provider import MODEL_CONNECTION_LIMITS
from app.net import outbound_transport

UVICORN_KEEPALIVE_SECONDS = 5.0  # uvicorn's default `timeout_keep_alive`


class PortEcho:
    """A peer that keeps connections much longer than uvicorn's default and answers each
    request with the client port it came from (one port per connection)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            timeout_keep_alive=60,
            http="h11",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = str(scope["client"][1]).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def __enter__(self) -> PortEcho:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the echo server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture(scope="module")
def echo() -> Iterator[PortEcho]:
    with PortEcho() as server:
        yield server


async def client_port(client: httpx2.AsyncClient, url: str) -> str:
    response = await client.get(url)
    response.raise_for_status()
    return response.text


async def ports_across_an_idle_gap(transport: httpx2.AsyncBaseTransport, url: str) -> set[str]:
    """The client ports of two requests 4.5 s apart (less than uvicorn's 5 s keep-alive)."""
    async with httpx2.AsyncClient(transport=transport) as client:
        first = await client_port(client, url)
        await asyncio.sleep(UVICORN_KEEPALIVE_SECONDS - 0.5)
        second = await client_port(client, url)
    return {first, second}


async def test_model_pool_drops_connections_idle_near_uvicorns_keepalive(echo: PortEcho) -> None:
    assert MODEL_CONNECTION_LIMITS.keepalive_expiry is not None
    assert MODEL_CONNECTION_LIMITS.keepalive_expiry < UVICORN_KEEPALIVE_SECONDS - 0.5
    transport = outbound_transport(limits=MODEL_CONNECTION_LIMITS)
    assert len(await ports_across_an_idle_gap(transport, echo.url)) == 2


async def test_default_pool_drops_connections_idle_near_uvicorns_keepalive(
    echo: PortEcho,
) -> None:
    """The MCP connector's pool (`outbound_transport` with no limits of its own)."""
    assert len(await ports_across_an_idle_gap(outbound_transport(), echo.url)) == 2


async def test_a_busy_connection_is_still_reused(echo: PortEcho) -> None:
    """The control: within the expiry, one connection carries both requests."""
    async with httpx2.AsyncClient(transport=outbound_transport()) as client:
        first = await client_port(client, echo.url)
        await asyncio.sleep(0.5)
        assert await client_port(client, echo.url) == first
