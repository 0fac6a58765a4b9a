"""What the fake model was asked: one record per HTTP request, with readers for its content."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tests.fake_llm.script import Reply

ApiKind = Literal["responses", "chat_completions"]

API_PATHS: Mapping[str, ApiKind] = {
    "/v1/responses": "responses",
    "/v1/chat/completions": "chat_completions",
}

_TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})


def content_text(content: object) -> str:
    """The text of a message content: a string, or the joined text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in _TEXT_PART_TYPES
        )
    return ""


@dataclass(eq=False)
class RecordedRequest:
    """One request the fake received; `json` is the parsed body ({} when it is not JSON)."""

    method: str
    path: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    json: dict[str, Any] = field(repr=False)
    time: float
    """`time.monotonic()` when the request body had been read."""
    reply: Reply | None = field(default=None, repr=False)
    """The reply served, once chosen (None for unknown paths and unreadable bodies)."""
    _disconnected: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def api(self) -> ApiKind | None:
        """Which API was called, or None for any other path."""
        return API_PATHS.get(self.path)

    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed (SSE) answer."""
        return self.json.get("stream") is True

    @property
    def model(self) -> str | None:
        """The model name the client asked for."""
        model = self.json.get("model")
        return model if isinstance(model, str) else None

    @property
    def tool_choice(self) -> str | None:
        """The forced tool's name (Responses or Chat Completions shape), or the mode given."""
        choice = self.json.get("tool_choice")
        if isinstance(choice, str):
            return choice
        if isinstance(choice, dict):
            function = choice.get("function")
            name = function.get("name") if isinstance(function, dict) else choice.get("name")
            return name if isinstance(name, str) else None
        return None

    @property
    def client_disconnected(self) -> bool:
        """Whether the client went away before the whole answer was sent."""
        return self._disconnected.is_set()

    def mark_disconnected(self) -> None:
        """Record that the client went away early (called by the server)."""
        self._disconnected.set()

    @property
    def input_items(self) -> list[dict[str, Any]]:
        """The conversation sent: Responses `input` items, or Chat Completions `messages`.

        A Responses `input` given as a plain string counts as one user message.
        """
        key = "input" if self.api == "responses" else "messages"
        items = self.json.get(key)
        if isinstance(items, str):
            return [{"role": "user", "content": items}]
        if isinstance(items, list):
            return [item for item in items if isinstance(item, dict)]
        return []

    @property
    def input_item_count(self) -> int:
        """How many input items (Responses) or messages, system included (Chat Completions)."""
        return len(self.input_items)

    @property
    def instructions(self) -> str | None:
        """Responses `instructions`, or the first system/developer message of a chat."""
        if self.api == "responses":
            instructions = self.json.get("instructions")
            return instructions if isinstance(instructions, str) else None
        for message in self.input_items:
            if message.get("role") in ("system", "developer"):
                return content_text(message.get("content"))
        return None

    @property
    def user_texts(self) -> list[str]:
        """The texts of every user message, oldest first."""
        return [
            content_text(item.get("content"))
            for item in self.input_items
            if item.get("role") == "user" and item.get("type", "message") == "message"
        ]

    @property
    def last_user_text(self) -> str | None:
        """The text of the last user message, or None when there is none."""
        texts = self.user_texts
        return texts[-1] if texts else None

    @property
    def ends_with_tool_result(self) -> bool:
        """Whether the last input item is a tool result (function_call_output / tool message)."""
        items = self.input_items
        return bool(items) and _is_tool_result(items[-1])

    @property
    def tool_result_text(self) -> str | None:
        """The text of the tool result that ends the input, or None."""
        items = self.input_items
        if not items or not _is_tool_result(items[-1]):
            return None
        last = items[-1]
        return content_text(last.get("output") if "output" in last else last.get("content"))

    @property
    def tool_results(self) -> list[str]:
        """The texts of every tool result in the input, oldest first."""
        return [
            content_text(item.get("output") if "output" in item else item.get("content"))
            for item in self.input_items
            if _is_tool_result(item)
        ]

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools offered to the model, in request order."""
        names: list[str] = []
        tools = self.json.get("tools")
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, dict):
                continue
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else tool.get("name")
            if isinstance(name, str):
                names.append(name)
        return names


def _is_tool_result(item: Mapping[str, Any]) -> bool:
    return item.get("type") == "function_call_output" or item.get("role") == "tool"
