"""A fake OpenAI-compatible HTTP server: a real uvicorn on loopback, in a thread of its own.

The fake speaks the wire protocol of `POST /v1/responses` and `POST /v1/chat/completions`
(streamed and not), so the real openai client and agents' models run end to end against it.
Its event loop is its own: it keeps answering whatever the test's loop is doing, and a server
under test in another process can use it through `base_url`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any, Literal, Self

import openai
import uvicorn

from tests.fake_llm import transcription, wire
from tests.fake_llm.recorded import RecordedRequest
from tests.fake_llm.script import Reply, Responder
from tests.fake_llm.transcription import TranscriptionForm

logger = logging.getLogger(__name__)

API_KEY = "test-key"
DEFAULT_REPLY_TEXT = "fake reply"
DEFAULT_TRANSCRIPT = "fake transcript"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WaitOutcome = Literal["elapsed", "stopped", "disconnected"]

# uvicorn says this when a handler returns mid-body, which is how `cut_after` drops a stream.
_CUT_MESSAGE = "ASGI callable returned without completing response."
# Requests under `/c/<name>/` are for the channel `name` (see `FakeLLM.channel`).
CHANNEL_PREFIX = "/c/"


class _QuietOwnThread(logging.Filter):
    """Drops uvicorn's chatter from the fake's own thread; other servers' logs pass untouched."""

    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self._thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self._thread_id:
            return True
        return record.levelno >= logging.WARNING and record.msg != _CUT_MESSAGE


class FakeLLM:
    """A scripted OpenAI-compatible model server on 127.0.0.1; thread-safe.

    Answers come from the queue (`enqueue`), then from `responder`, then `default_reply`.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, default_reply: Reply | None = None
    ) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self.default_reply = default_reply or Reply.text(DEFAULT_REPLY_TEXT)
        self._lock = threading.Lock()
        self._queue: collections.deque[Reply] = collections.deque()
        self._responder: Responder | None = None
        self._requests: list[RecordedRequest] = []
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._log_filter: _QuietOwnThread | None = None
        self._startup_error: BaseException | None = None
        self._transcription_reply: Reply | None = None
        # A channel shares its server's thread and port; its scripts and records are its own.
        self._server_fake: FakeLLM | None = None
        self._channel_name: str | None = None
        self._channels: dict[str, FakeLLM] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self, *, timeout: float = 10.0) -> Self:
        """Bind the port and serve in a background thread; returns once requests are accepted."""
        if self._server_fake is not None:
            raise RuntimeError("a channel runs on its server's thread: start the server")
        if self._thread is not None:
            raise RuntimeError("FakeLLM can be started only once")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this: without it, small SSE writes wait on delayed ACKs (~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self._host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            _FakeApp(self),
            lifespan="off",
            http="h11",
            loop="asyncio",
            log_config=None,  # never reconfigure the test process's logging
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"fake-llm-{self._port}", daemon=True
        )
        self._thread.start()
        assert self._thread.ident is not None
        self._log_filter = _QuietOwnThread(self._thread.ident)
        for name in ("uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).addFilter(self._log_filter)

        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._remove_log_filter()
                raise RuntimeError("the fake LLM server failed to start") from self._startup_error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the fake LLM server did not start in time")
            time.sleep(0.005)
        return self

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(sock))
        except BaseException as exc:  # reported by start(); a thread has nowhere else to raise
            self._startup_error = exc

    async def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        await self._server.serve(sockets=[sock])

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop serving: hanging and delayed requests end, open streams are cut. Idempotent."""
        if self._server_fake is not None:
            raise RuntimeError("a channel stops with its server: stop the server")
        thread, server, loop, stopping = self._thread, self._server, self._loop, self._stopping
        if thread is None or server is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            # RuntimeError: the loop closed in between, nothing is left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        server.should_exit = True
        thread.join(timeout)
        self._remove_log_filter()
        if thread.is_alive():
            raise TimeoutError("the fake LLM server did not stop in time")

    def _remove_log_filter(self) -> None:
        if self._log_filter is not None:
            for name in ("uvicorn.error", "uvicorn.access"):
                logging.getLogger(name).removeFilter(self._log_filter)
            self._log_filter = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ channels

    def channel(self, name: str) -> FakeLLM:
        """A model of its own on this server: its own queue, responder and recorded requests.

        It answers under `/c/<name>/v1/...` (its `base_url`), so one server shared by a whole
        test session keeps each test module's scripts apart. The same name gives the same channel.
        """
        if self._server_fake is not None:
            return self._server_fake.channel(name)
        if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ValueError(f"a channel name is letters, digits, '-', '_' or '.': {name!r}")
        with self._lock:
            existing = self._channels.get(name)
            if existing is None:
                existing = FakeLLM(host=self._host, default_reply=self.default_reply)
                existing._server_fake = self
                existing._channel_name = name
                self._channels[name] = existing
            return existing

    def _route(self, path: str) -> tuple[FakeLLM | None, str]:
        """The channel a request path is for and the path inside it (None: unknown channel)."""
        if not path.startswith(CHANNEL_PREFIX):
            return self, path
        name, _, rest = path[len(CHANNEL_PREFIX) :].partition("/")
        with self._lock:
            return self._channels.get(name), "/" + rest

    @property
    def port(self) -> int:
        """The bound TCP port (known once started)."""
        if self._server_fake is not None:
            return self._server_fake.port
        if self._port is None:
            raise RuntimeError("FakeLLM is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to hand to clients, e.g. `http://127.0.0.1:PORT/v1`."""
        if self._channel_name is not None:
            return f"http://{self._host}:{self.port}{CHANNEL_PREFIX}{self._channel_name}/v1"
        return f"http://{self._host}:{self.port}/v1"

    def client(
        self, *, max_retries: int = 0, timeout: float = 10.0, strict: bool = False
    ) -> openai.AsyncOpenAI:
        """An AsyncOpenAI client for this fake; `strict` checks answers against openai's types."""
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=API_KEY,
            max_retries=max_retries,
            timeout=timeout,
            _strict_response_validation=strict,
        )

    # ------------------------------------------------------------ scripting

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies; each model request takes the next one, first in first out."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending_replies(self) -> int:
        """How many queued replies no request has taken yet."""
        with self._lock:
            return len(self._queue)

    @property
    def responder(self) -> Responder | None:
        """Picks the reply from the request when the queue is empty; runs in the fake's thread."""
        with self._lock:
            return self._responder

    @responder.setter
    def responder(self, responder: Responder | None) -> None:
        with self._lock:
            self._responder = responder

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    def model_requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests made to the model endpoints only."""
        return [request for request in self.requests if request.api is not None]

    def reset(self) -> None:
        """Forget queued replies, the responder and the recorded requests."""
        with self._lock:
            self._queue.clear()
            self._responder = None
            self._requests.clear()
            self._transcription_reply = None

    # ------------------------------------------------------------ speech to text

    @property
    def transcription_reply(self) -> Reply:
        """How `POST /v1/audio/transcriptions` answers (its text, or an error status)."""
        with self._lock:
            return self._transcription_reply or Reply.text(DEFAULT_TRANSCRIPT)

    @transcription_reply.setter
    def transcription_reply(self, reply: Reply | None) -> None:
        with self._lock:
            self._transcription_reply = reply

    def transcription_requests(self) -> list[TranscriptionForm]:
        """The forms of the transcription requests received (malformed ones left out), in order."""
        forms = []
        for request in self.requests:
            if request.path == transcription.TRANSCRIPTIONS_PATH:
                with contextlib.suppress(transcription.MalformedForm):
                    forms.append(transcription.parse_form(request))
        return forms

    async def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait (without blocking the caller's loop) until `count` model requests have arrived."""
        deadline = time.monotonic() + timeout
        while len(requests := self.model_requests()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(requests)} of {count} model requests arrived")
            await asyncio.sleep(0.01)
        return requests

    # ------------------------------------------------------------ used by the app

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self._queue:
                reply = self._queue.popleft()
                request.reply = reply
                return reply
            responder = self._responder
        reply = responder(request) if responder is not None else self.default_reply
        request.reply = reply
        return reply

    def _stop_event(self) -> asyncio.Event:
        if self._server_fake is not None:
            return self._server_fake._stop_event()
        assert self._stopping is not None
        return self._stopping


class _FakeApp:
    """The ASGI app: plain ASGI, because cutting a stream means returning mid-body."""

    def __init__(self, fake: FakeLLM) -> None:
        self._fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        fake, path = self._fake._route(scope["path"])
        if fake is None:
            await _send_json(send, 404, wire.error_body(404, f"No fake channel for {path}"))
            return
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope["headers"]
        }
        request = RecordedRequest(
            method=scope["method"],
            path=path,
            headers=headers,
            body=body,
            json=_parse_json(body),
            time=time.monotonic(),
        )
        fake._record(request)
        if request.path == transcription.TRANSCRIPTIONS_PATH and request.method == "POST":
            status, content_type, content = transcription.answer(request, fake.transcription_reply)
            await _start(send, status, content_type)
            await send({"type": "http.response.body", "body": content, "more_body": False})
            return
        if request.api is None or request.method != "POST":
            await _send_json(
                send,
                404,
                wire.error_body(404, f"No fake route for {request.method} {request.path}"),
            )
            return
        if not request.json:
            await _send_json(send, 400, wire.error_body(400, "The body must be a JSON object."))
            return

        disconnected = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, disconnected))
        try:
            finished = await self._answer(fake, request, send, disconnected)
        finally:
            watcher.cancel()
        if not finished:
            request.mark_disconnected()

    async def _answer(
        self, fake: FakeLLM, request: RecordedRequest, send: Send, disconnected: asyncio.Event
    ) -> bool:
        """Serve the scripted reply; False when the client left before the end."""
        try:
            reply = fake._take_reply(request)
        except Exception as exc:
            logger.exception("fake_llm.responder_failed")
            await _send_json(send, 500, wire.error_body(500, f"fake LLM responder raised {exc!r}"))
            return True

        stopping = self._fake._stop_event()
        if reply.hang or reply.delay_before:
            outcome = await _wait(
                None if reply.hang else reply.delay_before, stopping, disconnected
            )
            if outcome == "disconnected":
                return False
            if outcome == "stopped":
                await _send_json(send, 503, wire.error_body(503, "The fake LLM server stopped."))
                return True

        if reply.status != 200:
            await _send_json(send, reply.status, wire.error_body(reply.status, reply.error_message))
            return True

        if not request.stream:
            make_body = wire.responses_body if request.api == "responses" else wire.chat_body
            content = make_body(reply, request)
            if reply.cut_after is None:
                await _send_json(send, 200, content)
                return True
            await _start(send, 200, "application/json")
            await send(
                {
                    "type": "http.response.body",
                    "body": content[: len(content) // 2],
                    "more_body": True,
                }
            )
            return True  # returning mid-body drops the connection

        make_frames = wire.responses_frames if request.api == "responses" else wire.chat_frames
        return await _stream(make_frames(reply, request), reply, send, stopping, disconnected)


async def _stream(
    frames: list[wire.Frame],
    reply: Reply,
    send: Send,
    stopping: asyncio.Event,
    disconnected: asyncio.Event,
) -> bool:
    """Send SSE frames with the reply's pacing and cut; False when the client left first."""
    await _start(send, 200, "text/event-stream; charset=utf-8")
    deltas_sent = 0
    for frame in frames:
        if reply.cut_after is not None and (
            frame.kind == "terminal" or (frame.kind == "delta" and deltas_sent == reply.cut_after)
        ):
            return True  # returning mid-body drops the connection
        if frame.kind == "delta":
            if deltas_sent and reply.delay_between:
                outcome = await _wait(reply.delay_between, stopping, disconnected)
                if outcome == "stopped":
                    return True  # cut the stream: the server is going away
                if outcome == "disconnected":
                    return False
            deltas_sent += 1
        if disconnected.is_set():
            return False
        await send({"type": "http.response.body", "body": frame.data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True


async def _wait(
    seconds: float | None, stopping: asyncio.Event, disconnected: asyncio.Event
) -> WaitOutcome:
    """Sleep `seconds` (forever when None), unless the server stops or the client leaves first."""
    waiters = {
        asyncio.create_task(stopping.wait()): "stopped",
        asyncio.create_task(disconnected.wait()): "disconnected",
    }
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()
    if stopping.is_set():
        return "stopped"
    if disconnected.is_set():
        return "disconnected"
    return "elapsed"


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def _start(send: Send, status: int, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"x-request-id", wire.new_id("req_").encode()),
        (b"openai-processing-ms", b"1"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _send_json(send: Send, status: int, content: bytes) -> None:
    await _start(send, status, "application/json")
    await send({"type": "http.response.body", "body": content, "more_body": False})
