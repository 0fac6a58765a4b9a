"""A real uvicorn on a loopback port, in a background thread, serving the TODO MCP app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from fastapi import FastAPI

from app.auth.base import TokenVerifier
from app.store.database import create_engine
from app.todo_mcp import build_todo_mcp
from tests.pg_cluster import free_port

PUBLIC_HOST = "todo.example.test"


@dataclass(frozen=True)
class LiveServer:
    """A running server: its port, URLs, and uvicorn's view of the open connections."""

    port: int
    server: uvicorn.Server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def open_connections(self) -> list[object]:
        """Client connections uvicorn holds open right now (read from another thread)."""
        for _ in range(10):
            try:
                return list(self.server.server_state.connections)
            except RuntimeError:  # the set changed size while being copied
                continue
        return list(self.server.server_state.connections)


def todo_app(*, database_url: str, verifier: TokenVerifier, port: int, **options: Any) -> FastAPI:
    """A FastAPI app wired like the main one: TODO MCP at exactly /mcp next to other routes.

    `options` go to `build_todo_mcp` (limits, idle timeout).
    """
    engine = create_engine(database_url)
    todo = build_todo_mcp(
        verifier=verifier,
        engine=engine,
        public_url_hosts=[PUBLIC_HOST],
        port=port,
        **options,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            async with todo.running():
                yield
        finally:
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.router.routes.append(todo.route)
    return app


@contextmanager
def serve_todo(
    *, database_url: str, verifier: TokenVerifier, **options: Any
) -> Iterator[LiveServer]:
    """Run `todo_app` with uvicorn on a free loopback port until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = todo_app(database_url=database_url, verifier=verifier, port=port, **options)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the TODO MCP server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(port=port, server=server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StandaloneServer:
    """`python -m app.todo_mcp` running in a subprocess."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@contextmanager
def run_standalone(
    *, env: dict[str, str], log_path: Path, timeout: float = 60.0
) -> Iterator[StandaloneServer]:
    """Start the standalone entry point on a free port; ready once /mcp answers 401."""
    port = free_port()
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AUTH_", "MCP_", "OPENAI_", "DATABASE_", "AUTO_MIGRATE"))
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.todo_mcp", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**inherited, **env},
            stdout=log,
            stderr=log,
        )
    try:
        _wait_for_401(f"http://127.0.0.1:{port}/mcp", process, log_path, timeout)
        yield StandaloneServer(port=port, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_401(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx2.post(url, json={}, timeout=1).status_code == 401:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not start:\n{log.read_text()[-4000:]}")
