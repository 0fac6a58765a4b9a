"""The only place that uses private parts of the openai client, and why.

A streamed Responses turn spent about a quarter of its server CPU in two places of the client
that do no useful work for us:

- Every streamed event is validated against `ResponseStreamEvent`, a union of 59 event types
  that the client marks with its own discriminator metadata, which pydantic does not read: it
  tries the event against every variant (a `response.created` event, which echoes the tools,
  took about 1 ms). `LeanAsyncOpenAI._process_response_data` validates the same data against the
  same union with pydantic's own discriminator on `type` (every variant has its own literal), so
  the result is the same model, built by the same validation of the one variant that matches;
  whatever does not validate takes the client's own path, unchanged.
- Before sending, `responses.create` transforms the request body against its TypedDicts, running
  every item of `input` and every tool through every variant of their unions. The transform only
  renames aliased keys, formats dates and files and dumps pydantic models; the create parameters
  have no aliases or formats (tests/unit/agent/test_openai_seams.py walks them), so for a body of
  plain JSON values (what the agents SDK sends) it returns an equal body. `LeanResponses.create`
  posts such a body as it is, exactly as `create` would; anything else goes through `create`.

Both run only with an openai of the `TESTED_OPENAI_RELEASE` (`lean_openai_supported()`); any other
version gets the plain `AsyncOpenAI`, and the test of the release fails first.
"""

from __future__ import annotations

import functools
import inspect
from importlib.metadata import version
from typing import Annotated, Any, cast, get_args

import httpx2
import pydantic
from openai import NOT_GIVEN, AsyncOpenAI, AsyncStream, NotGiven, Omit
from openai._base_client import make_request_options
from openai.resources.responses import AsyncResponses
from openai.types.responses import Response, ResponseStreamEvent

# The openai release (major, minor) these seams were read and tested against.
TESTED_OPENAI_RELEASE = (3, 54)
# What `create` sends as request options rather than in the body.
_OPTION_PARAMETERS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
# The type the client casts each streamed Responses event to (an annotated union).
_STREAM_EVENT: Any = ResponseStreamEvent


@functools.cache
def lean_openai_supported() -> bool:
    """Whether the installed openai is one these seams were checked against."""
    return version("openai").split(".")[:2] == [str(part) for part in TESTED_OPENAI_RELEASE]


@functools.cache
def stream_event_adapter() -> pydantic.TypeAdapter[Any]:
    """`ResponseStreamEvent` with pydantic's discriminator on `type` (built at first use, as the
    client builds its own adapter)."""
    union = get_args(_STREAM_EVENT)[0]
    return pydantic.TypeAdapter(cast(Any, Annotated[union, pydantic.Field(discriminator="type")]))


@functools.cache
def _create_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(AsyncResponses.create).parameters) - {"self"}


def _is_plain(value: object) -> bool:
    """JSON values only: exact dicts with string keys, lists, strings, numbers, None."""
    kind = type(value)
    if kind is dict:
        return all(
            type(key) is str and _is_plain(item)
            for key, item in value.items()  # type: ignore[attr-defined]
        )
    if kind is list:
        return all(_is_plain(item) for item in value)  # type: ignore[attr-defined]
    return kind is str or kind is int or kind is float or kind is bool or value is None


def plain_body(params: dict[str, Any]) -> dict[str, Any] | None:
    """The body `responses.create(**params)` would send, when its transform cannot change it.

    None when a parameter is unknown to `create` or a value is more than plain JSON (a pydantic
    model, a tuple, a date, an omitted value inside a dict): those go through `create` itself.
    """
    parameters = _create_parameters()
    body: dict[str, Any] = {}
    for key, value in params.items():
        if key not in parameters:
            return None
        if key in _OPTION_PARAMETERS or not _given(value):
            continue  # `create` leaves omitted parameters out of the body
        if not _is_plain(value):
            return None
        body[key] = value
    return body


def _given(value: object) -> bool:
    return not isinstance(value, NotGiven | Omit)


class LeanResponses(AsyncResponses):
    """`responses.create` without the request transform when the body is plain JSON."""

    async def create(self, **params: Any) -> Any:
        body = plain_body(params)
        if body is None:
            return await super().create(**params)
        stream = params.get("stream") is True
        options = make_request_options(
            extra_headers=params.get("extra_headers"),
            extra_query=params.get("extra_query"),
            extra_body=params.get("extra_body"),
            timeout=params.get("timeout", NOT_GIVEN),
            security={"bearer_auth": True},
        )
        return await self._post(
            "/responses",
            body=body,
            options=options,
            cast_to=Response,
            stream=stream,
            stream_cls=AsyncStream[ResponseStreamEvent],
        )


class LeanAsyncOpenAI(AsyncOpenAI):
    """`AsyncOpenAI` sending and reading streamed Responses with less CPU (see the module)."""

    @property
    def user_agent(self) -> str:
        # The client names its own class in User-Agent: keep the header `AsyncOpenAI` sends.
        return f"{AsyncOpenAI.__name__}/Python {self._version}"

    @functools.cached_property
    def responses(self) -> AsyncResponses:
        return LeanResponses(self)

    def _process_response_data(
        self, *, data: object, cast_to: type[Any], response: httpx2.Response
    ) -> Any:
        if cast_to is _STREAM_EVENT and type(data) is dict:
            try:
                return stream_event_adapter().validate_python(data)
            except pydantic.ValidationError:
                pass  # the client's own path decides: construct what it can, or raise
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)
