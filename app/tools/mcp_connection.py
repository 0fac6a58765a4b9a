"""One shared connection pool to the MCP server; per request, a client on the caller's token."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx2
from agents import RunContextWrapper, default_tool_error_function
from agents.mcp import MCPServerStreamableHttp
from mcp.types import CallToolResult

from app.net import outbound_transport
from app.observability.agent_calls import observe_tool_call
from app.observability.metrics import Metrics

DEFAULT_SERVER_NAME = "todo"
_E = TypeVar("_E", bound=BaseException)


class McpToolUnavailable(Exception):
    """A tool call got no answer from the MCP server (timeout or broken connection)."""


class McpSessionExpired(Exception):
    """The MCP server refused the caller's token (401): it expired during the turn."""


class _AuthWatch:
    """Remembers whether the MCP server answered 401: the MCP client reports only an error."""

    rejected = False


def _in_chain(error: BaseException | None, kind: type[_E]) -> _E | None:
    """The first `kind` among `error` and its causes (the agents SDK wraps tool errors)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, kind):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _unreachable(error: BaseException | None) -> bool:
    return any(_in_chain(error, kind) for kind in (TimeoutError, httpx2.TransportError))


def mcp_tool_failure(context: RunContextWrapper[Any], error: Exception) -> str:
    """Tool errors go back to the model; a server that does not answer ends the turn instead.

    Handing a timeout to the model invites it to retry (another full wait) or to claim success;
    the user gets a clear error event and can try again.
    """
    if _unreachable(error):
        raise McpToolUnavailable("the MCP server did not answer the tool call") from error
    expired = _in_chain(error, McpSessionExpired)
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
        self._transport = transport or outbound_transport(limits=limits or httpx2.Limits())
        self._closed = False
        self._metrics = metrics

    @property
    def closed(self) -> bool:
        return self._closed

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
