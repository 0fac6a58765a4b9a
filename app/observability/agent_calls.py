"""Metrics and spans around a turn, each model request and each MCP tool call.

Spans record no exception messages (a provider's error text can quote the input): the status
carries the exception's type name only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx2
import openai
from agents import Model, ModelResponse, ModelSettings, ModelTracing, Tool, TResponseInputItem
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseStreamEvent
from chatkit.types import (
    AssistantMessageContentPartTextDelta,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from mcp.types import CallToolResult
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from app.chat.backpressure import wait_for_reader
from app.context import RequestContext
from app.observability.metrics import Metrics, ToolOutcome, TurnOutcome
from app.observability.tracing import REQUEST_ID_ATTRIBUTE, request_id_attributes, tracer

if TYPE_CHECKING:
    from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest
    from openai.types.responses.response_prompt_param import ResponsePromptParam


def _attach(span: Span) -> Any:
    """`use_span` that leaves exceptions alone: they are classified, never recorded verbatim."""
    if not span.is_recording():
        return contextlib.nullcontext()  # tracing is off: nothing to make current
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def _failed(span: Span, exc: BaseException) -> None:
    span.set_status(StatusCode.ERROR, type(exc).__name__)


# -- turns -------------------------------------------------------------------------------------


class ObservedServer(Protocol):
    """What `observed_turn` needs from the ChatKit server it decorates."""

    metrics: Metrics | None


S = TypeVar("S", bound=ObservedServer)
Respond = Callable[
    [S, ThreadMetadata, UserMessageItem | None, RequestContext], AsyncIterator[ThreadStreamEvent]
]


def _is_text(event: ThreadStreamEvent) -> bool:
    return isinstance(event, ThreadItemUpdatedEvent) and isinstance(
        event.update, AssistantMessageContentPartTextDelta
    )


def observed_turn(respond: Respond[S]) -> Respond[S]:
    """Decorates `ChatKitServer.respond`: the turn's span, outcome, duration and first token.

    The turn span is the current span while the wrapped generator runs, so the agent run it
    starts (model and tool calls) and its SQL statements become its children. Outcomes: `ok`,
    `error` (the answer ended in an error event), `cancelled` (the client went away).
    """

    @functools.wraps(respond)
    async def wrapper(
        self: S,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        started = time.perf_counter()
        first_token: float | None = None
        outcome: TurnOutcome = "cancelled"
        span = tracer().start_span(
            "chat.turn", attributes={REQUEST_ID_ATTRIBUTE: context.request_id}
        )
        events = respond(self, thread, input_user_message, context)
        try:
            while True:
                with _attach(span):
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        break
                if first_token is None and _is_text(event):
                    first_token = time.perf_counter() - started
                yield event
            outcome = "ok"
        except Exception as exc:
            outcome = "error"
            _failed(span, exc)
            raise
        finally:
            await aclose_quietly(events)
            span.set_attribute("app.turn.outcome", outcome)
            span.end()
            if self.metrics is not None:
                self.metrics.turn_finished(outcome, time.perf_counter() - started, first_token)

    return wrapper


async def aclose_quietly(events: AsyncIterator[Any]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


# -- model requests ----------------------------------------------------------------------------


def model_failure_kind(exc: BaseException) -> str:
    """A small fixed vocabulary for why a model request failed."""
    if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | httpx2.TimeoutException):
        return "timeout"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth"
    if isinstance(exc, openai.APIStatusError):
        return "http_5xx" if exc.status_code >= 500 else "http_4xx"
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return "connection"
    return "other"


class ObservedModel(Model):
    """Counts, times and traces every request to the wrapped model; otherwise transparent."""

    def __init__(
        self, inner: Model, *, api: str, system: str, model_name: str, metrics: Metrics | None
    ) -> None:
        self.inner = inner
        self._api = api
        self._metrics = metrics
        self._attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": system,
            "gen_ai.request.model": model_name,
            "app.model_api": api,
        }
        self._span_name = f"chat {model_name}"

    def _start(self) -> tuple[Span, float]:
        if self._metrics is not None:
            self._metrics.model_request(self._api)
        span = tracer().start_span(
            self._span_name,
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, **request_id_attributes()},
        )
        return span, time.perf_counter()

    def _finish(self, span: Span, started: float, exc: BaseException | None) -> None:
        failure = None
        if isinstance(exc, Exception):
            failure = model_failure_kind(exc)
            span.set_attribute("error.type", failure)
            _failed(span, exc)
        span.end()
        if self._metrics is not None:
            self._metrics.model_finished(self._api, time.perf_counter() - started, failure)

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        span, started = self._start()
        error: BaseException | None = None
        try:
            with _attach(span):
                return await self.inner.get_response(
                    system_instructions,
                    input,
                    model_settings,
                    tools,
                    output_schema,
                    handoffs,
                    tracing,
                    previous_response_id=previous_response_id,
                    conversation_id=conversation_id,
                    prompt=prompt,
                )
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(span, started, error)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        span, started = self._start()
        error: BaseException | None = None
        events = self.inner.stream_response(
            system_instructions,
            input,
            model_settings,
            tools,
            output_schema,
            handoffs,
            tracing,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            prompt=prompt,
        )
        try:
            while True:
                with _attach(span):
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        break
                await wait_for_reader()  # a slow client slows the model, not memory
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            await aclose_quietly(events)
            self._finish(span, started, error)

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        return self.inner.get_retry_advice(request)

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.inner._cleanup_on_run_end(owner)

    async def close(self) -> None:
        await self.inner.close()


# -- tool calls --------------------------------------------------------------------------------


async def observe_tool_call(
    metrics: Metrics | None, tool_name: str, call: Awaitable[CallToolResult]
) -> CallToolResult:
    """Await one MCP tool call inside its span; count it by tool and outcome.

    Outcomes: `ok`; `error` when the tool answered with an error result; `failed` when no
    usable answer came (timeout, broken connection, protocol error); `cancelled` (the turn
    was stopped).
    """
    span = tracer().start_span(
        f"execute_tool {tool_name}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool_name,
            **request_id_attributes(),
        },
    )
    started = time.perf_counter()
    outcome: ToolOutcome = "cancelled"
    try:
        with _attach(span):
            result = await call
        outcome = "error" if result.is_error else "ok"
        if result.is_error:
            span.set_status(StatusCode.ERROR, "tool_error")
        return result
    except Exception as exc:
        outcome = "failed"
        _failed(span, exc)
        raise
    finally:
        span.set_attribute("app.tool.outcome", outcome)
        span.end()
        if metrics is not None:
            metrics.tool_finished(tool_name, outcome, time.perf_counter() - started)
