"""The ChatKit server: a per-request agent, streamed answers, and what happens when things break."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any, cast

import anyio
from agents import Agent, Model, RunConfig, Runner
from agents.mcp import MCPServer
from agents.result import RunResultStreaming
from chatkit.actions import Action
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.types import (
    AssistantMessageItem,
    AudioInput,
    ChatKitReq,
    FeedbackKind,
    SyncCustomActionResponse,
    ThreadItem,
    ThreadItemDoneEvent,
    ThreadItemReplacedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    TranscriptionResult,
    UserMessageItem,
    UserMessageTagContent,
    WidgetItem,
)

from app.agent.factory import build_agent
from app.agent.instructions import turn_instructions
from app.agent.titles import TitleMaker, first_words_title
from app.chat.attachment_input import AttachmentConverter
from app.chat.attachments import Attachments
from app.chat.backpressure import StreamWindow, WindowedRun, window_for_run
from app.chat.composer import DICTATION_DISABLED_MESSAGE, ComposerFeatures
from app.chat.failures import McpUnavailableError, user_message_for
from app.chat.mentions import mention_text
from app.chat.sdk_seams import cancel_queue_reader, dispatch
from app.chat.task_actions import TaskActions
from app.chat.task_widgets import TASK_TOOLS, board_after_calls, task_copy_text, task_widget
from app.chat.tool_progress import ToolProgressHooks
from app.chat.turn_stream import TurnStream
from app.context import RequestContext, TurnSlot
from app.errors import AppError, BadRequestError, FeatureDisabledError, ServiceUnavailableError
from app.log_safety import failure_fields, may_quote_user_data
from app.observability.agent_calls import aclose_quietly, observed_turn
from app.observability.metrics import Metrics
from app.store.attachment_blobs import Blob
from app.store.chatkit_store import SqlStore
from app.tools.mcp_connection import McpConnector, TurnMcpServer

logger = logging.getLogger(__name__)

TITLE_WAIT_SECONDS = 10.0
BUSY_MESSAGE = "The server is busy right now, so this answer did not start. Please retry shortly."


class HistoryConverter(AttachmentConverter):
    """Sends assistant history as plain text, which Responses and Chat Completions both accept."""

    async def assistant_message_to_input(self, item: AssistantMessageItem) -> Any:
        text = "".join(part.text for part in item.content)
        return {"type": "message", "role": "assistant", "content": text}

    async def tag_to_message_content(self, tag: UserMessageTagContent) -> Any:
        """An @-mention from the composer: a task as `task #12 "title"`, others as their data."""
        return {"type": "input_text", "text": mention_text(tag)}

    async def widget_to_input(self, item: WidgetItem) -> Any:
        """A task widget as its short text; the default would resend the whole widget JSON."""
        if item.copy_text is None:
            return await super().widget_to_input(item)
        text = f"A widget was shown to the user:\n{item.copy_text}"
        return {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }


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
        attachments: Attachments | None = None,
        features: ComposerFeatures | None = None,
    ) -> None:
        super().__init__(store=store, attachment_store=attachments or store)
        self._attachments = attachments
        self.sql_store = store
        self._model = model
        self._mcp = mcp
        self._history_limit = history_limit
        self._run_config = RunConfig(tracing_disabled=not tracing)
        self._converter = HistoryConverter()
        self._titles = titles
        self.metrics = metrics
        self._features = features or ComposerFeatures()
        # Widget actions and the task search (GET /api/tasks), with the caller's token.
        self.tasks = TaskActions(mcp)

    def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        """The turn's events; whatever ends the stream ends the turn too (see TurnEnd)."""
        answer: AsyncIterator[ThreadStreamEvent]
        if context.model_slot is not None:
            answer = self._after_slot(context.model_slot, thread, input_user_message, context)
        else:
            answer = self._answer(thread, input_user_message, context)
        if context.turn_end is not None and isinstance(answer, AsyncGenerator):
            context.turn_end.on_end(answer.aclose)
        return answer

    async def _after_slot(
        self,
        slot: TurnSlot,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        """The answer, once one of this process's model slots is free.

        The client has the thread and its message by now (the SDK sent them before asking for
        the answer), so a wait here is seen as a pending answer, not a silent request. Past
        TURN_QUEUE_SECONDS the stream ends with an error event; the message stays, for a retry.
        The answer's generator is made only once the slot is taken: a waiting turn holds nothing
        of it.
        """
        answer: AsyncIterator[ThreadStreamEvent] | None = None
        try:
            if not await slot.take():
                if self.metrics is not None:
                    self.metrics.turn_refused("busy")
                logger.info("turn.queue_timeout")
                raise CustomStreamError(BUSY_MESSAGE, allow_retry=True)
            answer = self._answer(thread, input_user_message, context)
            async for event in answer:
                yield event
        finally:
            slot.release()  # at once: the next waiting turn need not wait for this one's saves
            if answer is not None:
                await aclose_quietly(answer)

    @observed_turn
    async def _answer(
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
        hooks = ToolProgressHooks()
        mcp_server: TurnMcpServer | None = None
        result: RunResultStreaming | None = None
        streamed = False
        try:
            history = await self._history(thread, context)
            mcp_server = await self._connect_mcp(context)
            agent = self._agent_for(input_user_message, context, mcp_server)
            window = StreamWindow()
            tools_of_turn = mcp_server.running() if mcp_server is not None else nullcontext()
            with window_for_run(window), tools_of_turn:
                result = Runner.run_streamed(
                    agent,
                    await self._turn_converter(history, context).to_agent_input(history),
                    context=agent_context,
                    hooks=hooks,
                    run_config=self._run_config,
                )
            run = cast(RunResultStreaming, WindowedRun(result, window))
            async for event in stream_agent_response(agent_context, run):
                yield turn.rewrite(event)
            streamed = True
            widget = self._task_widget(thread, hooks, context)
            if widget is not None:
                yield ThreadItemDoneEvent(item=widget)
            if self._wants_title(thread, input_user_message):
                # After the answer, so a model title neither delays its first token nor runs
                # beside it. Setting it is enough: the SDK saves it and sends thread.updated.
                title = await self._title_for(input_user_message)
                # A title the user gave while the answer ran wins over the automatic one.
                renamed = (await self.store.load_thread(thread.id, context)).title
                thread.title = renamed or title
        except Exception as exc:
            # By type, status and SQLSTATE when the text may quote the user (a provider's 400
            # echoes the input, the driver quotes the row); a traceback only for our own bugs.
            logger.warning(
                "turn.failed",
                extra={"thread_id": thread.id, **failure_fields(exc)},
                exc_info=not (isinstance(exc, McpUnavailableError) or may_quote_user_data(exc)),
            )
            for event in turn.finish_pending():
                yield event
            if agent_context.workflow_item is not None:
                # Not AgentContext.end_workflow(): it puts the closing event on the context's
                # queue, and the only reader of that queue, stream_agent_response, has ended
                # with this exception. So the closing event is yielded here: collapsed, as the
                # SDK closes one, and with no duration summary (a failed turn's time says little).
                workflow, agent_context.workflow_item = agent_context.workflow_item, None
                workflow.workflow.expanded = False
                yield ThreadItemDoneEvent(item=workflow)
            raise CustomStreamError(user_message_for(exc), allow_retry=True) from exc
        finally:
            # A stop (client disconnect) lands here as cancellation: stop the run so no tool
            # executes after it, and close the MCP connection even while being cancelled.
            with anyio.CancelScope(shield=True):
                if result is not None and not streamed:
                    cancel_queue_reader(agent_context)  # the SDK leaves it waiting (sdk_seams)
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

    async def action(
        self,
        thread: ThreadMetadata,
        action: Action[str, Any],
        sender: WidgetItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        """A task widget's button: call the tool, then replace the widget (saved by the SDK)."""
        if sender is None:
            raise CustomStreamError(
                "A task action needs the widget it comes from.", allow_retry=False
            )
        try:
            updated = await self.tasks.apply(sender, action, context)
        except AppError as exc:
            retry = isinstance(exc, ServiceUnavailableError)
            raise CustomStreamError(exc.message, allow_retry=retry) from None
        yield ThreadItemReplacedEvent(item=updated)

    async def sync_action(
        self,
        thread: ThreadMetadata,
        action: Action[str, Any],
        sender: WidgetItem | None,
        context: RequestContext,
    ) -> SyncCustomActionResponse:
        """The same as `action`, answered with the updated widget item (saved here)."""
        if sender is None:
            raise BadRequestError("A task action needs the id of the widget it comes from.")
        updated = await self.tasks.apply(sender, action, context)
        await self.store.save_item(thread.id, updated, context=context)
        return SyncCustomActionResponse(updated_item=updated)

    async def transcribe(
        self, audio_input: AudioInput, context: RequestContext
    ) -> TranscriptionResult:
        """Dictation through the configured OpenAI-compatible speech-to-text endpoint."""
        transcriber = self._features.transcriber
        if transcriber is None:
            raise FeatureDisabledError(DICTATION_DISABLED_MESSAGE)
        text = await transcriber.transcribe(audio_input.data, audio_input.media_type)
        return TranscriptionResult(text=text)

    async def add_feedback(
        self,
        thread_id: str,
        item_ids: list[str],
        feedback: FeedbackKind,
        context: RequestContext,
    ) -> None:
        await self.sql_store.save_feedback(thread_id, item_ids, feedback, context)

    def _wants_title(self, thread: ThreadMetadata, message: UserMessageItem | None) -> bool:
        return self._titles is not None and not thread.title and message is not None

    async def _title_for(self, message: UserMessageItem | None) -> str:
        text = message_text(message) if message else ""
        assert self._titles is not None
        try:
            return await asyncio.wait_for(self._titles.title_for(text), TITLE_WAIT_SECONDS)
        except Exception:
            logger.info("title.fallback")
            return first_words_title(text)

    async def _history(self, thread: ThreadMetadata, context: RequestContext) -> list[ThreadItem]:
        page = await self.store.load_thread_items(
            thread.id, None, self._history_limit, "desc", context
        )
        return list(reversed(page.data))

    def _turn_converter(
        self, history: list[ThreadItem], context: RequestContext
    ) -> HistoryConverter:
        """The converter for one turn: it reads the caller's attachment bytes."""
        attachments = self._attachments
        if attachments is None:
            return self._converter

        async def read(attachment_id: str) -> Blob | None:
            return await attachments.content(attachment_id, context)

        return self._converter.for_turn(history, read)

    def _agent_for(
        self, message: UserMessageItem | None, context: RequestContext, mcp: TurnMcpServer | None
    ) -> Agent[Any]:
        """The turn's agent: the picked model (if allowed), a forced task tool, instructions."""
        options = message.inference_options if message is not None else None
        model = self._model
        if options is not None and options.model and self._features.models is not None:
            # A model no longer listed (a retried old message) falls back to the default.
            model = self._features.models.model_for(options.model) or self._model
        forced = options.tool_choice.id if options and options.tool_choice else None
        instructions = turn_instructions(
            today=datetime.now(UTC).date(),
            display_name=context.display_name,
            accept_language=context.accept_language,
            deployment=self._features.agent_instructions,
        )
        return build_agent(
            model=model,
            # Converted once per tool list, not on each model call (see TurnMcpServer).
            tools=list(mcp.function_tools()) if mcp else [],
            instructions=instructions,
            tool_choice=forced if forced in TASK_TOOLS and mcp is not None else None,
        )

    def _task_widget(
        self, thread: ThreadMetadata, hooks: ToolProgressHooks, context: RequestContext
    ) -> WidgetItem | None:
        """The task list widget for a turn that listed or changed tasks, if the results read."""
        board = board_after_calls(hooks.finished)
        if board is None:
            return None
        return WidgetItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            # Naive local time, as the SDK stamps its own items; the store normalises it.
            created_at=datetime.now(UTC).astimezone().replace(tzinfo=None),
            widget=task_widget(board),
            copy_text=task_copy_text(board),
        )

    async def _connect_mcp(self, context: RequestContext) -> TurnMcpServer | None:
        if self._mcp is None:
            return None
        # No request unless the shared tool list is missing or expired; a session opens only
        # when the model calls a tool.
        server = self._mcp.turn_server(context.token)
        try:
            await server.connect()
        except Exception as exc:
            await _close_quietly(server)
            raise McpUnavailableError() from exc
        return server


def message_text(message: UserMessageItem) -> str:
    return " ".join(part.text for part in message.content).strip()


async def _close_quietly(server: MCPServer) -> None:
    try:
        await server.cleanup()  # type: ignore[no-untyped-call]
    except Exception:
        logger.warning("mcp.cleanup_failed", exc_info=True)
