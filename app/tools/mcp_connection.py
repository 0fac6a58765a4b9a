"""One shared connection pool to the MCP server; per request, a client on the caller's token.

A turn's MCP server (`McpConnector.turn_server`) costs nothing until the model calls a tool: the
tool list is fetched once per process and shared (refreshed when it expires or the server says
it changed), and the session that carries the caller's token opens at the first tool call, with
the protocol version negotiated once per process, so a tool call is one HTTP request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp_types
from agents import FunctionTool, RunContextWrapper, default_tool_error_function
from agents.exceptions import UserError
from agents.mcp import MCPServer, MCPServerStreamableHttp, MCPUtil
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, GetPromptResult, ListPromptsResult, Tool

from app.causes import caused_by
from app.net import outbound_transport
from app.observability.agent_calls import observe_tool_call
from app.observability.metrics import Metrics

DEFAULT_SERVER_NAME = "todo"
# How long the shared tool list is used when the server gives no `ttlMs` (or 0, the MCP SDK's
# default) of its own; a `notifications/tools/list_changed` drops it earlier.
TOOLS_TTL_SECONDS = 300.0
LEGACY = "legacy"


class McpToolUnavailable(Exception):
    """A tool call got no answer from the MCP server (timeout or broken connection)."""


class McpSessionExpired(Exception):
    """The MCP server refused the caller's token (401): it expired during the turn."""


class _AuthWatch:
    """Remembers whether the MCP server answered 401: the MCP client reports only an error."""

    rejected = False


def _unreachable(error: BaseException | None) -> bool:
    if any(caused_by(error, kind) is not None for kind in (TimeoutError, httpx2.TransportError)):
        return True
    failed = caused_by(error, MCPError)
    return failed is not None and failed.code == mcp_types.REQUEST_TIMEOUT


def mcp_tool_failure(context: RunContextWrapper[Any], error: Exception) -> str:
    """Tool errors go back to the model; a server that does not answer ends the turn instead.

    Handing a timeout to the model invites it to retry (another full wait) or to claim success;
    the user gets a clear error event and can try again.
    """
    if _unreachable(error):
        raise McpToolUnavailable("the MCP server did not answer the tool call") from error
    expired = caused_by(error, McpSessionExpired)
    if expired is not None:
        # Not a tool answer: the model would be told the call failed and try something else.
        raise expired
    return default_tool_error_function(context, error)


class ObservedMcpServer(MCPServerStreamableHttp):
    """An MCP client whose tool calls are counted, timed and traced."""

    def __init__(
        self, *, metrics: Metrics | None, auth_watch: _AuthWatch | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics
        self._auth_watch = auth_watch or _AuthWatch()

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        call = super().call_tool(tool_name, arguments, meta)
        try:
            return await observe_tool_call(self._metrics, tool_name, call)
        except Exception as exc:
            if self._auth_watch.rejected:
                raise McpSessionExpired("the MCP server refused the token") from exc
            raise


class _LentTransport(httpx2.AsyncBaseTransport):
    """The shared pool lent to one per-request client: closing that client keeps the pool open."""

    def __init__(self, connector: McpConnector, auth_watch: _AuthWatch) -> None:
        self._connector = connector
        self._auth_watch = auth_watch

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._connector._send(request)
        if response.status_code == 401:
            self._auth_watch.rejected = True
        return response

    async def aclose(self) -> None:
        # The connector owns the pool and closes it once, in `McpConnector.aclose()`.
        return None


@dataclass(frozen=True, slots=True)
class ToolListing:
    """The server's tools and how to talk to it, shared by every turn of the process."""

    tools: list[Tool]
    # The negotiated protocol version (adopted by later sessions without a probe), or LEGACY
    # for a server that only knows the initialize handshake.
    mode: str
    discover: mcp_types.DiscoverResult | None
    expires_at: float  # time.monotonic()


# The turn whose agent run this is: set around `Runner.run_streamed`, whose tasks (tool calls
# among them) start with a copy of the context it was set in.
_current_turn: ContextVar[TurnMcpServer | None] = ContextVar("mcp_turn_server", default=None)


class _TurnDispatch(MCPServer):
    """What the shared function tools call: the MCP server of the run's own turn."""

    def __init__(self, name: str) -> None:
        super().__init__(failure_error_function=mcp_tool_failure)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def connect(self) -> None:
        return None

    async def cleanup(self) -> None:
        return None

    async def list_tools(
        self, run_context: RunContextWrapper[Any] | None = None, agent: Any = None
    ) -> list[Tool]:
        return []

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        turn = _current_turn.get()
        if turn is None:
            raise UserError("a task tool was called outside a turn")
        return await turn.call_tool(tool_name, arguments, meta)

    async def list_prompts(self) -> ListPromptsResult:
        return ListPromptsResult(prompts=[])

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> GetPromptResult:
        raise UserError(f"MCP server {self.name!r} has no prompts")


class TurnMcpServer(MCPServer):
    """One turn's MCP server, as its caller: no request until the model calls a tool.

    `connect()` takes the process-wide tool list (fetching it only when there is none yet or it
    expired); the first `call_tool()` opens a session carrying the caller's token, reused by the
    turn's later calls and closed by `cleanup()`.
    """

    def __init__(self, connector: McpConnector, token: str, metrics: Metrics | None) -> None:
        super().__init__(failure_error_function=mcp_tool_failure)
        self._connector = connector
        self._token = token
        self._metrics = metrics
        self._listing: ToolListing | None = None
        self._client: Client | None = None
        self._opening = asyncio.Lock()
        self._holder: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._auth_watch = _AuthWatch()

    @property
    def name(self) -> str:
        return self._connector.name

    async def connect(self) -> None:
        self._listing = await self._connector.listing(self._token)

    def function_tools(self) -> list[FunctionTool]:
        """The tools as the agents SDK runs them: built once per tool list, shared by every
        turn (their calls reach this turn's server while `running()` is in effect)."""
        assert self._listing is not None, "connect() first"
        return self._connector.function_tools(self._listing)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Start the agent run inside this block: its tool calls go to this turn's server."""
        token = _current_turn.set(self)
        try:
            yield
        finally:
            _current_turn.reset(token)

    async def cleanup(self) -> None:
        self._client = None
        self._done.set()
        holder, self._holder = self._holder, None
        if holder is not None:
            await asyncio.gather(holder, return_exceptions=True)

    @property
    def cached_tools(self) -> list[Tool] | None:
        return None if self._listing is None else list(self._listing.tools)

    async def list_tools(
        self, run_context: RunContextWrapper[Any] | None = None, agent: Any = None
    ) -> list[Tool]:
        if self._listing is None:
            await self.connect()
        assert self._listing is not None
        # The agents SDK copies a tool's schema before it changes anything in it.
        return list(self._listing.tools)

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        call = self._call(tool_name, arguments, meta)
        try:
            return await observe_tool_call(self._metrics, tool_name, call)
        except Exception as exc:
            if self._auth_watch.rejected:
                raise McpSessionExpired("the MCP server refused the token") from exc
            raise

    async def _call(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None
    ) -> CallToolResult:
        client = await self._session()
        params = mcp_types.CallToolRequestParams(name=tool_name, arguments=arguments, _meta=meta)
        # The request itself: the SDK's `call_tool` would list the tools again in this new
        # session to check the result against the tool's output schema.
        return await client.session.send_request(
            mcp_types.CallToolRequest(params=params),
            CallToolResult,
            request_read_timeout_seconds=self._connector.timeout_seconds,
        )

    async def _session(self) -> Client:
        async with self._opening:
            if self._client is None:
                if self._listing is None:
                    await self.connect()
                opened: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
                self._holder = asyncio.create_task(self._hold(opened))
                self._client = await opened
            return self._client

    async def _hold(self, opened: asyncio.Future[Client]) -> None:
        """Open the session and keep it open until cleanup, all in this one task: the MCP
        client's task group must be left in the task that entered it, and a tool call runs in
        a task of its own."""
        try:
            async with self._connector.session(
                self._token, self._listing, self._auth_watch
            ) as client:
                opened.set_result(client)
                await self._done.wait()
        except BaseException as exc:
            if not opened.done():
                opened.set_exception(exc)
                return
            raise

    async def list_prompts(self) -> ListPromptsResult:
        return ListPromptsResult(prompts=[])

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> GetPromptResult:
        raise UserError(f"MCP server {self.name!r} has no prompts")


class McpConnector:
    """Builds a per-request MCP server client that forwards exactly the caller's bearer token.

    Create once per process (in the lifespan) and `aclose()` at shutdown. Every client it builds
    shares one connection pool (or the given `transport`); headers (the token) belong to each
    client alone.
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float,
        *,
        name: str = DEFAULT_SERVER_NAME,
        limits: httpx2.Limits | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.name = name
        # The SSL context is built here, once: a fresh client per request would build its own.
        # An in-process transport (the embedded server) replaces the network altogether.
        self._transport = transport or outbound_transport(limits=limits)
        self._closed = False
        self._metrics = metrics
        self._listing: ToolListing | None = None
        self._listing_lock = asyncio.Lock()
        self._dispatch = _TurnDispatch(name)
        self._function_tools: tuple[ToolListing, list[FunctionTool]] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def turn_server(self, token: str) -> TurnMcpServer:
        """The MCP server of one turn as `token`'s owner (see TurnMcpServer)."""
        self._check(token)
        return TurnMcpServer(self, token, self._metrics)

    async def listing(self, token: str) -> ToolListing:
        """The shared tool list; fetched (as `token`'s owner) when missing or expired."""
        listing = self._listing
        if listing is not None and listing.expires_at > time.monotonic():
            return listing
        async with self._listing_lock:  # one fetch for every turn that waits on it
            listing = self._listing
            if listing is not None and listing.expires_at > time.monotonic():
                return listing
            listing = self._listing = await self._fetch_listing(token)
            return listing

    def function_tools(self, listing: ToolListing) -> list[FunctionTool]:
        """`listing`'s tools converted for the agents SDK, once (not on every model call)."""
        built = self._function_tools
        if built is None or built[0] is not listing:
            tools = [
                MCPUtil.to_function_tool(
                    tool, self._dispatch, False, failure_error_function=mcp_tool_failure
                )
                for tool in listing.tools
            ]
            built = self._function_tools = (listing, tools)
        return built[1]

    def forget_tools(self) -> None:
        """Fetch the tool list again on next use (the server said it changed)."""
        self._listing = None

    async def _fetch_listing(self, token: str) -> ToolListing:
        async with self.session(token, None, _AuthWatch()) as client:
            tools: list[Tool] = []
            cursor: str | None = None
            ttl_seconds = TOOLS_TTL_SECONDS
            for _ in range(100):  # pages; a server whose cursor never ends is cut off
                page = await client.session.list_tools(
                    params=mcp_types.PaginatedRequestParams(cursor=cursor)
                )
                tools.extend(page.tools)
                if page.ttl_ms:
                    # The server's own hint; 0 is only the SDK's default, not a request.
                    ttl_seconds = page.ttl_ms / 1000
                cursor = page.next_cursor
                if cursor is None:
                    break
            discover = client.session.discover_result
            mode = client.protocol_version if discover is not None else LEGACY
        return ToolListing(tools, mode, discover, time.monotonic() + ttl_seconds)

    @asynccontextmanager
    async def session(
        self, token: str, listing: ToolListing | None, auth_watch: _AuthWatch
    ) -> AsyncIterator[Client]:
        """An MCP session as `token`'s owner; with a `listing`, adopting its negotiation."""
        http = self._client(
            auth_watch,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx2.Timeout(self.timeout_seconds),
            auth=None,
        )
        transport = streamable_http_client(self.url, http_client=http)
        if listing is None:
            mode, discover = "auto", None
        else:
            mode, discover = listing.mode, listing.discover
        client = Client(
            transport,
            mode=mode,
            prior_discover=discover,
            cache=None,
            read_timeout_seconds=self.timeout_seconds,
            message_handler=self._on_message,
        )
        async with http, client:
            yield client

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self.forget_tools()

    def _check(self, token: str) -> None:
        if self._closed:
            raise RuntimeError("McpConnector is closed")
        if not token or any(char in token for char in "\r\n"):
            raise ValueError("token must be a non-empty single-line string")

    def server_for(self, token: str) -> MCPServerStreamableHttp:
        """A not yet connected MCP server for one request, authenticated as `token`'s owner.

        Use it as `async with connector.server_for(token) as server:` (connects, then cleans up).
        """
        if self._closed:
            raise RuntimeError("McpConnector is closed")
        if not token or any(char in token for char in "\r\n"):
            raise ValueError("token must be a non-empty single-line string")
        auth_watch = _AuthWatch()

        def client_factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            return self._client(auth_watch, headers=headers, timeout=timeout, auth=auth)

        return ObservedMcpServer(
            metrics=self._metrics,
            auth_watch=auth_watch,
            params={
                "url": self.url,
                "headers": {"Authorization": f"Bearer {token}"},
                "timeout": self.timeout_seconds,
                "sse_read_timeout": self.timeout_seconds,
                "httpx_client_factory": client_factory,
            },
            cache_tools_list=True,
            failure_error_function=mcp_tool_failure,
            name=self.name,
            client_session_timeout_seconds=self.timeout_seconds,
        )

    def _client(
        self,
        auth_watch: _AuthWatch,
        *,
        headers: dict[str, str] | None,
        timeout: httpx2.Timeout | None,
        auth: httpx2.Auth | None,
    ) -> httpx2.AsyncClient:
        """A lightweight client over the shared pool carrying this request's own headers."""
        return httpx2.AsyncClient(
            transport=_LentTransport(self, auth_watch),
            headers=headers,
            timeout=timeout if timeout is not None else httpx2.Timeout(self.timeout_seconds),
            follow_redirects=False,
            auth=auth,
            # Env proxies would make the client build its own transports (and SSL contexts).
            trust_env=False,
        )

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        # httpcore would quietly reopen a closed pool: refuse instead, so nothing outlives aclose.
        if self._closed:
            raise httpx2.ConnectError("the MCP connection pool is closed", request=request)
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the shared connection pool; servers built before then can no longer connect."""
        if self._closed:
            return
        self._closed = True
        await self._transport.aclose()
