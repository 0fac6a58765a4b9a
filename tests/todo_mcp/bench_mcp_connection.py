"""Per-request MCP connection cost: a fresh default client vs McpConnector's shared transport.

Run: `.venv/bin/python -m tests.todo_mcp.bench_mcp_connection [iterations]`. The server is the
standalone `python -m app.todo_mcp` in its own process, on loopback, over a temporary SQLite.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2
from agents.mcp import MCPServerStreamableHttp

from app.auth.shared_secret import SharedSecretVerifier
from app.tools import McpConnector
from tests.todo_mcp.live_server import run_standalone

TIMEOUT = 10.0


def _fresh_default(url: str, token: str) -> MCPServerStreamableHttp:
    """What a request would build without the connector: agents' default client factory."""
    return MCPServerStreamableHttp(
        params={"url": url, "headers": {"Authorization": f"Bearer {token}"}, "timeout": TIMEOUT},
        cache_tools_list=True,
        client_session_timeout_seconds=TIMEOUT,
    )


async def _cycle(server: MCPServerStreamableHttp, *, call_tool: bool) -> None:
    async with server:
        await server.list_tools()
        if call_tool:
            await server.call_tool("list_tasks", {})


async def _timed(run: Callable[[], Awaitable[None]], iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"{name:<44} median {statistics.median(samples):6.2f} ms  "
        f"mean {statistics.fmean(samples):6.2f} ms  p95 {p95:6.2f} ms  (n={len(samples)})"
    )


async def bench(url: str, token: str, iterations: int) -> None:
    connector = McpConnector(url, TIMEOUT)
    results: dict[str, list[float]] = {}
    try:
        cases: dict[str, Callable[[], Awaitable[None]]] = {
            "fresh client: connect+list_tools+cleanup": lambda: _cycle(
                _fresh_default(url, token), call_tool=False
            ),
            "shared pool:  connect+list_tools+cleanup": lambda: _cycle(
                connector.server_for(token), call_tool=False
            ),
            "fresh client: ... + call_tool(list_tasks)": lambda: _cycle(
                _fresh_default(url, token), call_tool=True
            ),
            "shared pool:  ... + call_tool(list_tasks)": lambda: _cycle(
                connector.server_for(token), call_tool=True
            ),
        }
        for run in cases.values():  # warm up imports, the server and the pool
            await _timed(run, 10)
        # Interleaved rounds, so drift on the machine hits every case alike.
        rounds = 5
        for _ in range(rounds):
            for name, run in cases.items():
                results.setdefault(name, []).extend(await _timed(run, iterations // rounds))
        client_cost = await _timed(_new_default_client, iterations)
    finally:
        await connector.aclose()
    for name, samples in results.items():
        print(_summary(name, samples))
    print(_summary("httpx2.AsyncClient() alone (build + close)", client_cost))


async def _new_default_client() -> None:
    async with httpx2.AsyncClient():
        pass


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    secret = secrets.token_urlsafe(48)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            "AUTH_JWT_SECRET": secret,
            "DATA_DIR": str(Path(tmp) / "data"),
            "LOG_LEVEL": "WARNING",
        }
        with run_standalone(env=env, log_path=Path(tmp) / "server.log") as server:
            token = SharedSecretVerifier(secret).mint("bench-user")
            asyncio.run(bench(server.mcp_url, token, iterations))


if __name__ == "__main__":
    main()
