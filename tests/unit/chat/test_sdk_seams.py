"""The private SDK seams we use are pinned: leaving the tested range fails here first."""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from collections.abc import AsyncIterator
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Model, ModelResponse, RunConfig, Runner
from agents.items import TResponseStreamEvent
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.server import ChatKitServer
from chatkit.types import ThreadMetadata
from packaging.requirements import Requirement
from packaging.version import Version

from app.chat.sdk_seams import TESTED_CHATKIT_VERSIONS, cancel_queue_reader, queue_readers
from app.context import RequestContext
from app.store.chatkit_store import SqlStore
from app.store.database import create_engine

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_installed_chatkit_is_in_the_tested_range() -> None:
    installed = Version(version("openai-chatkit"))
    spec = Requirement("openai-chatkit" + ",".join(TESTED_CHATKIT_VERSIONS)).specifier
    assert installed in spec, f"openai-chatkit {installed} is outside {spec}: re-check sdk_seams"


def test_pyproject_pins_the_same_range() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    chatkit = [Requirement(d) for d in dependencies if d.startswith("openai-chatkit")]
    assert len(chatkit) == 1
    assert (
        chatkit[0].specifier
        == Requirement("openai-chatkit" + ",".join(TESTED_CHATKIT_VERSIONS)).specifier
    )


def test_the_private_dispatchers_still_have_the_shape_we_call() -> None:
    for name in ("_process_streaming", "_process_non_streaming"):
        method = getattr(ChatKitServer, name)
        assert list(inspect.signature(method).parameters) == ["self", "request", "context"]


class BrokenModel(Model):
    """A model whose connection breaks before its first event."""

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        raise ConnectionError("the model broke off")

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        return self._broken()

    async def _broken(self) -> AsyncIterator[TResponseStreamEvent]:
        raise ConnectionError("the model broke off")
        yield  # an async generator that never yields


async def test_a_failed_stream_leaves_no_task_waiting_on_the_event_queue(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    context: AgentContext[RequestContext] = AgentContext(
        thread=ThreadMetadata(id="thr_broken", created_at=datetime.now()),
        store=SqlStore(engine),
        request_context=RequestContext(user_id="u1", token="t", request_id="r1"),
    )
    agent: Agent[AgentContext[RequestContext]] = Agent(
        name="t", instructions="test", model=BrokenModel()
    )
    result = Runner.run_streamed(
        agent, "hi", context=context, run_config=RunConfig(tracing_disabled=True)
    )
    with pytest.raises(ConnectionError):
        async for _ in stream_agent_response(context, result):
            pass
    # What the seam is for: the SDK leaves the queue's reader waiting.
    assert len(queue_readers(context)) == 1
    cancel_queue_reader(context)
    await asyncio.sleep(0)
    assert queue_readers(context) == []
    await engine.dispose()
