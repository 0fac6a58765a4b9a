"""The TODO MCP server: five task tools over streamable HTTP; the caller is a verified token."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.base import TokenVerifier
from app.db_errors import database_failure_message, sqlstate_of
from app.errors import AuthenticationError, ServiceUnavailableError, error_response
from app.store.tasks import (
    DESCRIPTION_MAX_CHARS,
    MAX_PAGE_SIZE,
    TITLE_MAX_CHARS,
    CallQuota,
    Task,
    TaskError,
    TaskRepository,
    TaskStatus,
    TooManyCalls,
)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

# How long a client may keep the tool list (tools/list `ttlMs`).
TOOLS_LIST_TTL_MS = 300_000
SERVER_NAME = "todo"
INSTRUCTIONS = (
    "Manages the signed-in user's TODO list. Call list_tasks to see tasks and their ids; "
    "add_task, complete_task, update_task and delete_task change them. Task ids come from "
    "list_tasks or add_task; never guess them."
)
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
DEFAULT_CALLS_PER_MINUTE = 120
DEFAULT_STREAM_IDLE_SECONDS = 60.0
TASK_SAVE_FAILED = "The task list could not be saved or read right now; nothing was changed."


class TaskList(BaseModel):
    """The result of list_tasks: one page of tasks."""

    status: TaskStatus = Field(description="The filter that was applied.")
    count: int = Field(description="How many tasks are listed on this page.")
    tasks: list[Task] = Field(description="The tasks, oldest first.")
    has_more: bool = Field(description="Whether more tasks follow; ask again with next_after.")
    next_after: int | None = Field(
        description="Pass as `after` to list the next page; null on the last page."
    )


class DeletedTask(BaseModel):
    """The result of delete_task."""

    deleted: bool = Field(description="Always true: the task no longer exists.")
    task: Task = Field(description="The task as it was before deletion.")


TaskId = Annotated[
    int, Field(ge=1, description="The task's id, as returned by list_tasks or add_task.")
]


class McpTokenVerifier:
    """Adapts our `TokenVerifier` to the MCP SDK's: a verified token's subject is the user id."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        """Return the access info of a valid token, None (-> HTTP 401) for any bad one."""
        try:
            principal = await self._verifier.verify(token)
        except AuthenticationError:
            return None
        return AccessToken(
            token=token,
            client_id=principal.user_id,
            subject=principal.user_id,
            scopes=[],
            # Our verifier already checked `exp` with its leeway; the SDK's second check has none
            # and would refuse a token the API accepted moments earlier.
            expires_at=None,
            claims=principal.claims,
        )


class _IdleStreamsEnd:
    """Ends an event stream (the GET stream, a listen) that carried no event for `idle_seconds`.

    In stateless mode nothing is ever sent on a GET stream, so without this it stays open for
    as long as the client likes. Keep-alive comments (`: ping`) do not count as events.
    """

    def __init__(self, app: ASGIApp, *, idle_seconds: float) -> None:
        self._app = app
        self._idle_seconds = idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._idle_seconds <= 0:
            await self._app(scope, receive, send)
            return
        streaming = finished = False
        last_event = anyio.current_time()

        async def watch(message: Message) -> None:
            nonlocal streaming, finished, last_event
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                streaming = content_type.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body":
                if _carries_events(message.get("body", b"")):
                    last_event = anyio.current_time()
                finished = not message.get("more_body", False)
            await send(message)

        async with anyio.create_task_group() as group:

            async def end_when_idle() -> None:
                while True:
                    await anyio.sleep(min(1.0, self._idle_seconds / 2))
                    idle = anyio.current_time() - last_event
                    if streaming and not finished and idle >= self._idle_seconds:
                        group.cancel_scope.cancel()
                        return

            group.start_soon(end_when_idle)
            await self._app(scope, receive, watch)
            group.cancel_scope.cancel()
        if streaming and not finished:  # cut above: end the response properly
            logger.info("todo_mcp.stream_idle_closed", extra={"idle_seconds": self._idle_seconds})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _carries_events(body: bytes) -> bool:
    """Whether an SSE chunk holds more than comment lines (keep-alive pings)."""
    return any(line and not line.startswith(b":") for line in body.splitlines())


class _UnavailableAs503:
    """Answers 503 when keys to verify the token cannot be had, instead of a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, receive, watch)
        except ServiceUnavailableError as exc:
            if started:
                raise
            logger.warning("todo_mcp.auth_unavailable", extra={"reason": exc.message})
            await error_response(exc)(scope, receive, send)


@dataclass(frozen=True, slots=True)
class TodoMcp:
    """The embedded TODO MCP server: an ASGI endpoint at `path` and the lifecycle it needs.

    Serve `route` (or `asgi_app` at exactly `path`) and keep `running()` entered while it serves.
    """

    server: MCPServer[Any] = field(repr=False)
    asgi_app: ASGIApp = field(repr=False)
    path: str

    @property
    def route(self) -> Route:
        """A route for exactly `path` (a `Mount` would 307-redirect a POST to `path` itself)."""
        return Route(self.path, endpoint=self.asgi_app, name="todo_mcp")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the streamable-HTTP session manager; enter once, in the serving app's lifespan."""
        async with self.server.session_manager.run():
            yield


def build_todo_mcp(
    *,
    verifier: TokenVerifier,
    engine: AsyncEngine,
    public_url_hosts: list[str],
    port: int,
    path: str = "/mcp",
    issuer_url: str | None = None,
    calls_per_window: int = DEFAULT_CALLS_PER_MINUTE,
    call_window_seconds: int = 60,
    stream_idle_seconds: float = DEFAULT_STREAM_IDLE_SECONDS,
) -> TodoMcp:
    """Build the TODO MCP server answering at `path`.

    Accepted Host headers: 127.0.0.1, localhost and [::1] with `port`, plus `public_url_hosts`
    (Host header values such as `todo.example.com`, `todo.example.com:8443` or `name:*`);
    any other Host gets 421. Requests without a token our `verifier` accepts get 401.
    Each user may make `calls_per_window` tool calls per `call_window_seconds` (0: no limit);
    an event stream with nothing to send is ended after `stream_idle_seconds` (0: never).
    """
    if not path.startswith("/") or path == "/" or path.endswith("/"):
        raise ValueError("path must look like /mcp (leading slash, no trailing slash)")
    repository = TaskRepository(engine)
    quota = CallQuota(engine, limit=calls_per_window, window_seconds=call_window_seconds)
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        title="TODO tasks",
        instructions=INSTRUCTIONS,
        token_verifier=McpTokenVerifier(verifier),
        auth=AuthSettings(
            # Only advertised in OAuth metadata, which this server does not publish.
            issuer_url=issuer_url or f"http://127.0.0.1:{port}",
            resource_server_url=None,
        ),
        # The tools are fixed at startup and the same for every user: clients may keep the list.
        cache_hints={"tools/list": CacheHint(ttl_ms=TOOLS_LIST_TTL_MS, scope="public")},
    )
    _register_tools(server, repository, quota)

    hosts = [f"{name}:{port}" for name in _LOOPBACK_NAMES] + list(public_url_hosts)
    starlette_app = server.streamable_http_app(
        streamable_http_path=path,
        # Every call is one self-contained request: no server-side sessions, plain JSON answers.
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=hosts,
            allowed_origins=[
                f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")
            ],
        ),
    )
    # Each goes outermost among the app's middleware: inside Starlette's error middleware (which
    # would answer a 500 first) and around the SDK's bearer authentication.
    starlette_app.add_middleware(_UnavailableAs503)
    starlette_app.add_middleware(_IdleStreamsEnd, idle_seconds=stream_idle_seconds)
    return TodoMcp(server=server, asgi_app=starlette_app, path=path)


def _caller_id() -> str:
    """The verified user id of this call: the bearer middleware put it there, never a header."""
    # Stateless serving runs each call in its HTTP request's own context, so this is per request.
    token = get_access_token()
    if token is None:
        raise ToolError("Not authenticated.")
    return token.subject or token.client_id


async def _counted_caller(quota: CallQuota) -> str:
    """The caller's user id, once this call fits in their quota (else a tool error)."""
    user_id = _caller_id()
    try:
        await _run(quota.spend(user_id))
    except TooManyCalls as exc:
        logger.info("todo_mcp.calls_limited", extra={"limit": exc.limit})
        window = "minute" if exc.window_seconds == 60 else f"{exc.window_seconds} s"
        raise ToolError(
            f"Too many task requests: at most {exc.limit} per {window}. "
            f"Try again in {math.ceil(exc.retry_after)} s."
        ) from None
    return user_id


def _register_tools(server: MCPServer[Any], tasks: TaskRepository, quota: CallQuota) -> None:
    @_tool(
        server,
        title="List tasks",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )
    async def list_tasks(
        status: Annotated[
            TaskStatus,
            Field(
                description="'all' (default), 'open' (not completed yet) or 'completed'.",
            ),
        ] = "all",
        limit: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_PAGE_SIZE,
                description=f"At most this many tasks: 1 to {MAX_PAGE_SIZE} (the default).",
            ),
        ] = MAX_PAGE_SIZE,
        after: Annotated[
            int,
            Field(ge=0, description="Only tasks after this id: the previous page's next_after."),
        ] = 0,
    ) -> TaskList:
        """List the user's TODO tasks, oldest first, optionally only open or completed ones.

        Each task has its id, title, description, completion flag and timestamps (ISO 8601, UTC).
        Use the ids with complete_task, update_task and delete_task. One call lists at most
        `limit` tasks; when has_more is true, call again with after=next_after for the rest.
        """
        user_id = await _counted_caller(quota)
        page = await _run(tasks.page(user_id=user_id, status=status, after=after, limit=limit))
        return TaskList(
            status=status,
            count=len(page.tasks),
            tasks=page.tasks,
            has_more=page.has_more,
            next_after=page.tasks[-1].id if page.has_more else None,
        )

    @_tool(
        server,
        title="Add a task",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False
        ),
    )
    async def add_task(
        title: Annotated[
            str,
            Field(description=f"A short title, 1 to {TITLE_MAX_CHARS} characters."),
        ],
        description: Annotated[
            str,
            Field(description=f"Optional details, up to {DESCRIPTION_MAX_CHARS} characters."),
        ] = "",
    ) -> Task:
        """Create a new open TODO task for the user and return it with its id."""
        user_id = await _counted_caller(quota)
        return await _run(tasks.add(user_id=user_id, title=title, description=description))

    @_tool(
        server,
        title="Complete a task",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True
        ),
    )
    async def complete_task(task_id: TaskId) -> Task:
        """Mark one of the user's tasks as completed and return it.

        Completing an already completed task changes nothing.
        """
        user_id = await _counted_caller(quota)
        return await _run(tasks.complete(user_id=user_id, task_id=task_id))

    @_tool(
        server,
        title="Update a task",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True
        ),
    )
    async def update_task(
        task_id: TaskId,
        title: Annotated[
            str | None,
            Field(description=f"New title, 1 to {TITLE_MAX_CHARS} characters; omit to keep it."),
        ] = None,
        description: Annotated[
            str | None,
            Field(
                description=(
                    f"New description, up to {DESCRIPTION_MAX_CHARS} characters; "
                    "omit to keep it, give an empty string to clear it."
                )
            ),
        ] = None,
    ) -> Task:
        """Change the title and/or the description of one of the user's tasks.

        Give at least one of title and description. Returns the updated task.
        """
        user_id = await _counted_caller(quota)
        return await _run(
            tasks.update(user_id=user_id, task_id=task_id, title=title, description=description)
        )

    @_tool(
        server,
        title="Delete a task",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=False
        ),
    )
    async def delete_task(task_id: TaskId) -> DeletedTask:
        """Permanently delete one of the user's tasks and return it as it was."""
        user_id = await _counted_caller(quota)
        return DeletedTask(
            deleted=True, task=await _run(tasks.delete(user_id=user_id, task_id=task_id))
        )


def _tool(
    server: MCPServer[Any], *, title: str, annotations: ToolAnnotations
) -> Callable[[_F], _F]:
    """Register a tool whose description is its cleaned docstring (no source indentation)."""

    def register(fn: _F) -> _F:
        server.add_tool(fn, title=title, description=inspect.getdoc(fn), annotations=annotations)
        return fn

    return register


async def _run(operation: Awaitable[_T]) -> _T:
    """Await a repository call, turning the caller's mistakes into tool errors the model reads.

    A database failure becomes a tool error too, raised without its cause: the SDK would log the
    cause's traceback, and the driver's text can quote the row being written (a task's title).
    """
    try:
        return await operation
    except TaskError as exc:
        raise ToolError(exc.message) from exc
    except SQLAlchemyError as exc:
        logger.warning(
            "todo_mcp.database_failed",
            extra={"error": type(exc).__name__, "sqlstate": sqlstate_of(exc)},
        )
        message = database_failure_message(exc) or TASK_SAVE_FAILED
        raise ToolError(message) from None
