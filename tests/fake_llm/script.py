"""What the fake model answers: replies, tool calls and the faults to inject."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from typing_extensions import Unpack

if TYPE_CHECKING:
    from tests.fake_llm.recorded import RecordedRequest

DEFAULT_TEXT_CHUNK_SIZE = 4
DEFAULT_ARGUMENTS_CHUNK_SIZE = 8


class TimingFaults(TypedDict, total=False):
    """Delays, cuts and hangs (see the `Reply` fields)."""

    delay_before: float
    delay_between: float
    cut_after: int
    hang: bool


class Faults(TimingFaults, total=False):
    """Fault options accepted by the `Reply` constructors (see the `Reply` fields)."""

    status: int
    error_message: str


def split_text(text: str, chunk_size: int) -> tuple[str, ...]:
    """Split `text` into pieces of `chunk_size` characters (no piece for an empty text)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    return tuple(text[i : i + chunk_size] for i in range(0, len(text), chunk_size))


@dataclass(frozen=True)
class ToolCall:
    """One function call the fake model makes; `call_id` is generated per request when None."""

    name: str
    arguments: str | Mapping[str, Any] = "{}"
    call_id: str | None = None
    chunk_size: int = DEFAULT_ARGUMENTS_CHUNK_SIZE

    @property
    def arguments_json(self) -> str:
        """The arguments as the JSON text the model streams."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments))

    def argument_chunks(self) -> tuple[str, ...]:
        """The argument deltas, in order; joined they give `arguments_json`."""
        return split_text(self.arguments_json, self.chunk_size)


@dataclass(frozen=True)
class Reply:
    """One scripted model answer: optional text, optional tool calls, optional faults.

    Faults, from the client's side:
    - `delay_before`: seconds before the status line and headers are sent.
    - `delay_between`: seconds between two consecutive deltas of a streamed answer.
    - `status`: anything but 200 answers with an OpenAI-style JSON error body
      (`{"error": {"message", "type", "param", "code"}}`) and that status.
    - `cut_after`: send that many deltas (text and argument deltas), then close the connection
      without the end of the chunked body and without the completion event. A non-streamed
      answer is cut in the middle of its JSON body.
    - `hang`: accept the request and answer nothing until the client leaves or the fake stops
      (then a 503 is sent, if anyone is still listening).
    """

    chunks: tuple[str, ...] = ()
    calls: tuple[ToolCall, ...] = ()
    delay_before: float = 0.0
    delay_between: float = 0.0
    status: int = 200
    error_message: str | None = None
    cut_after: int | None = None
    hang: bool = False

    def __post_init__(self) -> None:
        if self.delay_before < 0 or self.delay_between < 0:
            raise ValueError("delays cannot be negative")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError("cut_after cannot be negative")
        if self.status != 200 and not 400 <= self.status <= 599:
            raise ValueError(f"status must be 200 or an error status, not {self.status}")

    @property
    def joined_text(self) -> str:
        """The whole assistant text of this reply."""
        return "".join(self.chunks)

    @property
    def has_message(self) -> bool:
        """Whether the answer carries an assistant message (a reply with nothing at all does)."""
        return bool(self.chunks) or not self.calls

    @classmethod
    def text(
        cls, text: str, *, chunk_size: int = DEFAULT_TEXT_CHUNK_SIZE, **faults: Unpack[Faults]
    ) -> Reply:
        """A text answer streamed in pieces of `chunk_size` characters."""
        return cls(chunks=split_text(text, chunk_size), **faults)

    @classmethod
    def text_chunks(cls, chunks: Sequence[str], **faults: Unpack[Faults]) -> Reply:
        """A text answer streamed exactly as the given deltas."""
        return cls(chunks=tuple(chunks), **faults)

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: str | Mapping[str, Any] | None = None,
        *,
        call_id: str | None = None,
        text: str | None = None,
        **faults: Unpack[Faults],
    ) -> Reply:
        """One function call (arguments as a dict or JSON text), optionally after a text."""
        call = ToolCall(name, arguments if arguments is not None else {}, call_id=call_id)
        return cls.tool_calls(call, text=text, **faults)

    @classmethod
    def tool_calls(
        cls, *calls: ToolCall, text: str | None = None, **faults: Unpack[Faults]
    ) -> Reply:
        """Several function calls in one answer, optionally after an assistant text."""
        chunks = split_text(text, DEFAULT_TEXT_CHUNK_SIZE) if text else ()
        return cls(chunks=chunks, calls=tuple(calls), **faults)

    @classmethod
    def error(
        cls, status: int = 500, message: str | None = None, **faults: Unpack[TimingFaults]
    ) -> Reply:
        """An HTTP error answer with an OpenAI-style JSON body."""
        if status == 200:
            raise ValueError("an error reply needs a non-200 status")
        return cls(status=status, error_message=message, **faults)

    def with_faults(self, **faults: Unpack[Faults]) -> Reply:
        """A copy of this reply with the given fault options."""
        return dataclasses.replace(self, **faults)


Responder = Callable[["RecordedRequest"], Reply]
"""Decides the answer from the request; runs on the fake's own loop, so it must not block."""


def echo_responder(request: RecordedRequest) -> Reply:
    """A responder for many concurrent users: echoes the tool result, else the last user text."""
    if request.ends_with_tool_result:
        return Reply.text(f"tool said: {request.tool_result_text}")
    return Reply.text(f"echo: {request.last_user_text or ''}")
