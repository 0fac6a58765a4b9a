"""An independent TODO MCP server whose results look nothing like the embedded server's.

Tools answer with JSON text only (no structured content): list_tasks gives a bare JSON list,
ids are strings ("t1", "t2", ...) and completion is a `status` string ("open" / "done"). Each
call's bearer token is verified (HS256, the suite's shared secret) and recorded.
`unreadable = True` makes list_tasks answer prose instead of JSON.
"""

from __future__ import annotations

import json
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


@dataclass
class PlainCall:
    tool: str
    arguments: dict[str, Any]
    authorization: str
    user_id: str


@dataclass
class PlainTodoState:
    secret: str
    unreadable: bool = False
    calls: list[PlainCall] = field(default_factory=list)
    tasks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _next: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def caller(self, ctx: Context, tool: str, arguments: dict[str, Any]) -> str:
        authorization = (ctx.headers or {}).get("authorization", "")
        try:
            claims = jwt.decode(authorization.removeprefix("Bearer "), self.secret, ["HS256"])
        except jwt.PyJWTError as exc:
            raise ToolError("invalid token") from exc
        user_id = str(claims["sub"])
        with self._lock:
            self.calls.append(PlainCall(tool, arguments, authorization, user_id))
        return user_id

    def add(self, user_id: str, title: str, status: str = "open") -> dict[str, Any]:
        with self._lock:
            task = {"id": f"t{self._next}", "title": title, "status": status}
            self._next += 1
            self.tasks.setdefault(user_id, []).append(task)
            return dict(task)

    def find(self, user_id: str, task_id: str) -> dict[str, Any]:
        for task in self.tasks.get(user_id, []):
            if task["id"] == task_id:
                return task
        raise ToolError(f"No task {task_id} here.")


def build_app(state: PlainTodoState, port: int) -> Starlette:
    server: MCPServer[Any] = MCPServer("plain-todo")

    @server.tool(structured_output=False)
    async def list_tasks(ctx: Context, status: str = "all") -> str:
        """List tasks as JSON text."""
        user_id = state.caller(ctx, "list_tasks", {"status": status})
        if state.unreadable:
            return "You have a few things to do, I think."
        tasks = state.tasks.get(user_id, [])
        if status != "all":
            wanted = "done" if status == "completed" else "open"
            tasks = [task for task in tasks if task["status"] == wanted]
        return json.dumps(tasks)

    @server.tool(structured_output=False)
    async def add_task(ctx: Context, title: str, description: str = "") -> str:
        """Add a task."""
        user_id = state.caller(ctx, "add_task", {"title": title})
        return json.dumps(state.add(user_id, title))

    @server.tool(structured_output=False)
    async def complete_task(ctx: Context, task_id: str) -> str:
        """Complete a task."""
        user_id = state.caller(ctx, "complete_task", {"task_id": task_id})
        task = state.find(user_id, task_id)
        task["status"] = "done"
        return json.dumps(task)

    @server.tool(structured_output=False)
    async def update_task(ctx: Context, task_id: str, title: str | None = None) -> str:
        """Rename a task."""
        user_id = state.caller(ctx, "update_task", {"task_id": task_id, "title": title})
        task = state.find(user_id, task_id)
        if title is not None:
            task["title"] = title
        return json.dumps(task)

    @server.tool(structured_output=False)
    async def delete_task(ctx: Context, task_id: str) -> str:
        """Delete a task."""
        user_id = state.caller(ctx, "delete_task", {"task_id": task_id})
        task = state.find(user_id, task_id)
        state.tasks[user_id].remove(task)
        return json.dumps(task)

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
class RunningPlainTodo:
    state: PlainTodoState
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@contextmanager
def serve_plain_todo(secret: str) -> Iterator[RunningPlainTodo]:
    """Serve the plain TODO MCP server on a loopback port until the block ends."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    state = PlainTodoState(secret=secret)
    server = uvicorn.Server(uvicorn.Config(build_app(state, port), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the plain TODO MCP server did not start")
        time.sleep(0.02)
    try:
        yield RunningPlainTodo(state, port)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
