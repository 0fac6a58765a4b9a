"""The ChatKit server: a per-request agent, streamed answers, and what happens when things break."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from agents import Agent, Model, RunConfig, Runner
from agents.mcp import MCPServer
from agents.result import RunResultStreaming
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.types import (
    AssistantMessageItem,
    ChatKitReq,
    FeedbackKind,
    ThreadItem,
    ThreadItemDoneEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    UserMessageTagContent,
)

from app.agent.factory import build_agent
from app.agent.titles import TitleMaker, first_words_title
from app.chat.failures import McpUnavailableError, user_message_for
from app.chat.sdk_seams import dispatch
from app.chat.tool_progress import ToolProgressHooks
from app.chat.turn_stream import TurnStream
from app.context import RequestContext
from app.observability.agent_calls import observed_turn
from app.observability.metrics import Metrics
from app.store.chatkit_store import SqlStore
from app.tools.mcp_connection import McpConnector

logger = logging.getLogger(__name__)

TITLE_WAIT_SECONDS = 10.0
MAX_TAG_DATA_CHARS = 2000


class HistoryConverter(ThreadItemConverter):
    """Sends assistant history as plain text, which Responses and Chat Completions both accept."""

    async def assistant_message_to_input(self, item: AssistantMessageItem) -> Any:
        text = "".join(part.text for part in item.content)
        return {"type": "message", "role": "assistant", "content": text}

    async def tag_to_message_content(self, tag: UserMessageTagContent) -> Any:
        """An @-mention from the composer, passed on as plain text context."""
        data = json.dumps(tag.data, ensure_ascii=False, default=str)[:MAX_TAG_DATA_CHARS]
        return {"type": "input_text", "text": f"@{tag.text} refers to: {data}"}


class ChatServer(ChatKitServer[RequestContext]):
    """Answers each turn with a fresh agent acting on the caller's tasks with their own token."""

    def __init__(
        self,
        *,
        store: SqlStore,
        model: Model,
        mcp: McpConnector | None,
        history_limit: int,
        titles: TitleMaker | None = None,
        tracing: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(store=store, attachment_store=store)
        self.sql_store = store
        self._model = model
        self._mcp = mcp
        self._history_limit = history_limit
        self._run_config = RunConfig(tracing_disabled=not tracing)
        self._converter = HistoryConverter()
        self._titles = titles
        self.metrics = metrics

    @observed_turn
    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        started = time.perf_counter()
        agent_context: AgentContext[RequestContext] = AgentContext(
            thread=thread, store=self.store, request_context=context
        )
        turn = TurnStream()
        mcp_server: MCPServer | None = None
        result: RunResultStreaming | None = None
        # The title is worked out alongside the answer, so it never delays the first token.
        title_task = self._start_title(thread, input_user_message)
        try:
            history = await self._history(thread, context)
            mcp_server = await self._connect_mcp(context)
            agent: Agent[Any] = build_agent(
                model=self._model, mcp_servers=[mcp_server] if mcp_server else []
            )
            result = Runner.run_streamed(
                agent,
                await self._converter.to_agent_input(history),
                context=agent_context,
                hooks=ToolProgressHooks(),
                run_config=self._run_config,
            )
            async for event in stream_agent_response(agent_context, result):
                yield turn.rewrite(event)
            if title_task is not None:
                # Setting it is enough: the SDK saves the thread and sends thread.updated.
                thread.title = await _finished_title(title_task, input_user_message)
        except Exception as exc:
            logger.warning(
                "turn.failed",
                extra={"thread_id": thread.id, "error": type(exc).__name__},
                exc_info=not isinstance(exc, McpUnavailableError),
            )
            for event in turn.finish_pending():
                yield event
            if agent_context.workflow_item is not None:
                workflow, agent_context.workflow_item = agent_context.workflow_item, None
                workflow.workflow.expanded = False
                yield ThreadItemDoneEvent(item=workflow)
            raise CustomStreamError(user_message_for(exc), allow_retry=True) from exc
        finally:
            # A stop (client disconnect) lands here as cancellation: stop the run so no tool
            # executes after it, and close the MCP connection even while being cancelled.
            with anyio.CancelScope(shield=True):
                if title_task is not None and not title_task.done():
                    title_task.cancel()
                if result is not None and not result.is_complete:
                    result.cancel()
                if mcp_server is not None:
                    await _close_quietly(mcp_server)
        logger.info(
            "turn.done",
            extra={"thread_id": thread.id, "ms": round((time.perf_counter() - started) * 1000)},
        )

    async def process_request(
        self, request: ChatKitReq, context: RequestContext
    ) -> StreamingResult | NonStreamingResult:
        """Run an already parsed request (the endpoint parses each body once)."""
        return await dispatch(self, request, context)

    async def handle_stream_cancelled(
        self,
        thread: ThreadMetadata,
        pending_items: list[ThreadItem],
        context: RequestContext,
    ) -> None:
        """Save the partial answer; shielded, or the first awaited write is cancelled too."""
        with anyio.CancelScope(shield=True):
            await super().handle_stream_cancelled(thread, pending_items, context)
            logger.info("turn.stopped", extra={"thread_id": thread.id})

    async def add_feedback(
        self,
        thread_id: str,
        item_ids: list[str],
        feedback: FeedbackKind,
        context: RequestContext,
    ) -> None:
        await self.sql_store.save_feedback(thread_id, item_ids, feedback, context)

    def _start_title(
        self, thread: ThreadMetadata, message: UserMessageItem | None
    ) -> asyncio.Task[str] | None:
        if self._titles is None or thread.title or message is None:
            return None
        return asyncio.create_task(self._titles.title_for(message_text(message)))

    async def _history(self, thread: ThreadMetadata, context: RequestContext) -> list[ThreadItem]:
        page = await self.store.load_thread_items(
            thread.id, None, self._history_limit, "desc", context
        )
        return list(reversed(page.data))

    async def _connect_mcp(self, context: RequestContext) -> MCPServer | None:
        if self._mcp is None:
            return None
        server = self._mcp.server_for(context.token)
        try:
            await server.connect()  # type: ignore[no-untyped-call]
        except Exception as exc:
            await _close_quietly(server)
            raise McpUnavailableError() from exc
        return server


def message_text(message: UserMessageItem) -> str:
    return " ".join(part.text for part in message.content).strip()


async def _finished_title(task: asyncio.Task[str], message: UserMessageItem | None) -> str:
    try:
        return await asyncio.wait_for(task, TITLE_WAIT_SECONDS)
    except Exception:
        logger.info("title.fallback")
        return first_words_title(message_text(message) if message else "")


async def _close_quietly(server: MCPServer) -> None:
    try:
        await server.cleanup()  # type: ignore[no-untyped-call]
    except Exception:
        logger.warning("mcp.cleanup_failed", exc_info=True)
