"""The end-to-end harness itself: what the speed of every test on an in-process server rests on."""

from __future__ import annotations

import time

import httpx2

from tests.client_tls import shared_tls
from tests.e2e.harness import InProcessServer

ROUND_TRIPS = 10
# Loopback answers from an idle server take a few ms; a delayed-ACK stall takes 40 ms or more.
FAST_SECONDS = 0.03


async def test_in_process_server_answers_small_requests_without_delayed_ack_stalls(
    offline_server: InProcessServer,
) -> None:
    """uvicorn writes a response as headers, then body. Unless the server's socket sends small
    writes at once (TCP_NODELAY), the body waits for the client's delayed ACK on every request of
    a kept-alive connection after its first few: ~44 ms each, whatever the request."""
    async with httpx2.AsyncClient(base_url=offline_server.base_url, verify=shared_tls()) as http:
        assert (await http.get("/health")).status_code == 200  # opens the connection
        seconds = []
        for _ in range(ROUND_TRIPS):
            started = time.perf_counter()
            assert (await http.get("/health")).status_code == 200
            seconds.append(time.perf_counter() - started)
    # The fastest of ten: a busy machine slows some requests, a stall slows every one.
    assert min(seconds) < FAST_SECONDS, [round(s * 1000, 1) for s in seconds]
