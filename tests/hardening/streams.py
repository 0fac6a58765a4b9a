"""A streaming ChatKit request whose events a test can react to while they arrive."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from chatkit.types import ThreadStreamEvent
from pydantic import TypeAdapter

from tests.e2e.harness import sse_frames

_events: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)

EventHook = Callable[[ThreadStreamEvent], Awaitable[None]]


@dataclass
class Streamed:
    """What one request got: its status, and for a stream every event (validated by chatkit)."""

    status: int
    events: list[ThreadStreamEvent] = field(default_factory=list)
    body: dict[str, Any] | None = None

    def of_type(self, event_type: str) -> list[Any]:
        return [event for event in self.events if event.type == event_type]

    @property
    def errors(self) -> list[Any]:
        return self.of_type("error")

    @property
    def thread_id(self) -> str:
        return str(self.of_type("thread.created")[0].thread.id)


async def stream(
    base_url: str,
    token: str,
    op: str,
    params: dict[str, Any],
    *,
    on_event: EventHook | None = None,
) -> Streamed:
    """POST one op; a JSON answer is returned whole, a stream event by event through `on_event`."""
    body = json.dumps({"type": op, "params": params})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with (
        httpx2.AsyncClient(base_url=base_url, timeout=60) as http,
        http.stream("POST", "/api/chatkit", content=body, headers=headers) as response,
    ):
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
            return Streamed(response.status_code, body=response.json())
        result = Streamed(response.status_code)
        async for frame in sse_frames(response):
            event = _events.validate_json(frame)
            result.events.append(event)
            if on_event is not None:
                await on_event(event)
        return result


def is_text_delta(event: ThreadStreamEvent) -> bool:
    return event.type == "thread.item.updated" and event.update.type == (
        "assistant_message.content_part.text_delta"
    )
