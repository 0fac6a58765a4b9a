"""Outbound HTTP transports of the server (model API, MCP, JWKS)."""

from __future__ import annotations

import socket
from typing import Any

import httpx2

# A request's headers and body can leave as two small writes; without TCP_NODELAY the second
# waits for the peer's delayed ACK (~40 ms on Linux) on every reused keep-alive connection.
NO_DELAY_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def outbound_transport(**kwargs: Any) -> httpx2.AsyncHTTPTransport:
    """An HTTP connection pool whose sockets send small writes at once."""
    return httpx2.AsyncHTTPTransport(socket_options=NO_DELAY_SOCKET_OPTIONS, **kwargs)
