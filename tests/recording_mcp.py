"""An independent MCP server for tests: the five TODO tools in memory, recording every call.

It checks each call's bearer itself (HS256, the suite's shared secret) and records the exact
Authorization header it received, so tests can prove whose token reached which tool call.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route


@dataclass(frozen=True)
class ToolCallRecord:
    tool: str
    arguments: dict[str, Any]
    authorization: str
    user_id: str
    at: float


@dataclass
class RecordingMcp:
    """State shared between the test and the server thread."""

    secret: str
    delay_seconds: float = 0.0
    calls: list[ToolCallRecord] = field(default_factory=list)
    tasks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 1

    def _caller(self, ctx: Context) -> tuple[str, str]:
        headers = ctx.headers or {}
        authorization = headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            raise ToolError("missing bearer token")
        try:
            claims = jwt.decode(authorization[7:], self.secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise ToolError("invalid token") from exc
        return authorization, str(claims["sub"])

    async def record(self, ctx: Context, tool: str, arguments: dict[str, Any]) -> str:
        authorization, user_id = self._caller(ctx)
        with self._lock:
            self.calls.append(ToolCallRecord(tool, arguments, authorization, user_id, time.time()))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        return user_id

    def add(self, user_id: str, title: str, description: str) -> dict[str, Any]:
        with self._lock:
            task = {
                "id": self._next_id,
                "title": title,
                "description": description,
                "completed": False,
            }
            self._next_id += 1
            self.tasks.setdefault(user_id, []).append(task)
            return dict(task)

    def find(self, user_id: str, task_id: int) -> dict[str, Any]:
        for task in self.tasks.get(user_id, []):
            if task["id"] == task_id:
                return task
        raise ToolError(f"Task {task_id} not found.")


def build_app(state: RecordingMcp, port: int) -> Starlette:
    server: MCPServer[Any] = MCPServer("recording-todo")

    @server.tool()
    async def list_tasks(ctx: Context, status: str = "all") -> dict[str, Any]:
        """List tasks."""
        user_id = await state.record(ctx, "list_tasks", {"status": status})
        tasks = state.tasks.get(user_id, [])
        if status != "all":
            tasks = [t for t in tasks if t["completed"] == (status == "completed")]
        return {"tasks": [dict(t) for t in tasks]}

    @server.tool()
    async def add_task(ctx: Context, title: str, description: str = "") -> dict[str, Any]:
        """Add a task."""
        user_id = await state.record(ctx, "add_task", {"title": title, "description": description})
        return state.add(user_id, title, description)

    @server.tool()
    async def complete_task(ctx: Context, task_id: int) -> dict[str, Any]:
        """Complete a task."""
        user_id = await state.record(ctx, "complete_task", {"task_id": task_id})
        task = state.find(user_id, task_id)
        task["completed"] = True
        return dict(task)

    @server.tool()
    async def update_task(
        ctx: Context, task_id: int, title: str | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Update a task."""
        user_id = await state.record(ctx, "update_task", {"task_id": task_id, "title": title})
        task = state.find(user_id, task_id)
        if title is not None:
            task["title"] = title
        if description is not None:
            task["description"] = description
        return dict(task)

    @server.tool()
    async def delete_task(ctx: Context, task_id: int) -> dict[str, Any]:
        """Delete a task."""
        user_id = await state.record(ctx, "delete_task", {"task_id": task_id})
        task = state.find(user_id, task_id)
        state.tasks[user_id].remove(task)
        return dict(task)

    inner = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=[f"127.0.0.1:{port}"]
        ),
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    return Starlette(routes=[Route("/mcp", endpoint=inner)], lifespan=lifespan)


@dataclass
class RunningMcp:
    state: RecordingMcp
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@contextmanager
def serve_recording_mcp(secret: str, port: int | None = None) -> Iterator[RunningMcp]:
    """Run the recording server on loopback in a thread until the block ends."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stalls
    sock.bind(("127.0.0.1", port or 0))
    port = int(sock.getsockname()[1])
    state = RecordingMcp(secret=secret)
    config = uvicorn.Config(build_app(state, port), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("recording MCP server did not start")
        time.sleep(0.02)
    try:
        yield RunningMcp(state, port, server, thread)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
