"""Real servers on loopback and a ChatKit client that validates every streamed event.

`InProcessServer` runs the real app on a real uvicorn in a thread of the test process (real HTTP
on a loopback port, no import cost per start); `ServerProcess` runs `python -m app` in a
subprocess, for tests where the process boundary is the point (signals, restarts, several
processes, exit codes, the whole process's output, the CLI, settings only the environment sets).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from chatkit.types import ThreadStreamEvent
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from pydantic import TypeAdapter
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from app.logging import JsonFormatter, TextFormatter, request_id_var, user_id_var
from app.settings import Settings
from tests.client_tls import shared_tls
from tests.pg_cluster import free_port
from tests.processes import terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
_event_adapter: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)


@dataclass
class ServerProcess:
    """`python -m app` in a subprocess, with its own port and environment."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Arguments after `python`, `{port}` replaced; default `-m app` (HOST and PORT from env).
    argv: list[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("OPENAI_", "AUTH_", "MCP_"))
            },
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            "LOG_JSON": "true",
            **self.env,
        }
        log = self.log_path.open("ab")
        argv = [part.replace("{port}", str(self.port)) for part in self.argv or ["-m", "app"]]
        self.process = subprocess.Popen(
            [sys.executable, *argv], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx2.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        code = terminate(self.process, timeout)
        self.process = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text()


# Environment variables a test server never inherits from the test process (as ServerProcess).
_NOT_INHERITED = ("OPENAI_", "AUTH_", "MCP_")
# uvicorn waits this long for open connections at stop, on top of the app's own grace.
_GRACE_BACKSTOP_SECONDS = 10


class _MappingOnlySettings(Settings):
    """Settings from the values given alone: no process environment, no `.env` file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The Settings `python -m app` would read from exactly this environment (names upper-case)."""
    fields = {name.lower(): value for name, value in env.items()}
    return _MappingOnlySettings.model_validate(
        {k: v for k, v in fields.items() if k in Settings.model_fields}
    )


class _OwnThreadLog(logging.Handler):
    """Writes the records of one thread (the server's) to a file, formatted as the app would."""

    def __init__(self, path: Path, *, json_lines: bool) -> None:
        super().__init__()
        self._file = path.open("a", encoding="utf-8")
        self._formatter = JsonFormatter() if json_lines else TextFormatter()
        self.thread_id: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread_id:
            return
        try:
            record.request_id = request_id_var.get()
            record.user_id = user_id_var.get()
            self._file.write(self._formatter.format(record) + "\n")
            self._file.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._file.close()
        super().close()


@dataclass
class InProcessServer:
    """The real app (`create_app(settings)`) on a real uvicorn in a thread of this process.

    Same interface as `ServerProcess`. Settings come from `env` (plus what ServerProcess adds),
    never from this process's environment. `logs()` holds the lines logged on the server's own
    thread, formatted by the app's formatter; a test about the whole process's output (or its
    absence of secrets) belongs on a `ServerProcess`. /metrics is off unless `env` turns it on:
    one registry per app works in one process, but only metrics tests read it.
    """

    env: dict[str, str]
    log_path: Path
    port: int = 0
    # Spans go here instead of the OTLP exporter OTEL_EXPORTER_OTLP_ENDPOINT would make.
    tracer_provider: TracerProvider | None = None
    app: FastAPI | None = None
    settings: Settings | None = None
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _log: _OwnThreadLog | None = field(default=None, repr=False)
    _error: BaseException | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        from app.main import create_app  # the app's imports are paid once per test process

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it. asyncio sets it only on sockets it made itself (proto
        # IPPROTO_TCP, not this one's 0), uvloop under `python -m app` always: without it every
        # response written in two pieces (headers, body) waits ~40 ms for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = int(sock.getsockname()[1])
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        env = {
            **inherited,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            "LOG_JSON": "true",
            "METRICS": "false",
            **self.env,
        }
        try:
            self.settings = settings_from_env(env)
            self.app = create_app(self.settings, tracer_provider=self.tracer_provider)
        except BaseException:
            sock.close()
            raise
        config = uvicorn.Config(
            self.app,
            log_config=None,  # the app's lifespan configures logging, as under `python -m app`
            proxy_headers=False,
            timeout_graceful_shutdown=self.settings.shutdown_grace_seconds
            + _GRACE_BACKSTOP_SECONDS,
        )
        self._server = uvicorn.Server(config)
        _uvicorn_logs_to_root()
        self._log = _OwnThreadLog(self.log_path, json_lines=self.settings.log_json)
        logging.getLogger().addHandler(self._log)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"app-{self.port}", daemon=True
        )
        self._thread.start()

        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or self._server.should_exit:
                self._thread.join(timeout)
                self._detach_log()
                raise RuntimeError(f"server exited early:\n{self.logs()[-4000:]}") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{self.logs()[-4000:]}")
            time.sleep(0.02)
        response = httpx2.get(f"{self.base_url}/health", timeout=10)
        assert response.status_code == 200, (response.status_code, response.text)
        _drop_app_stderr_handler()
        # The lifespan froze every object alive (right for a server process); in the test process
        # that would keep each stopped server's garbage for the rest of the session.
        gc.unfreeze()

    def _run(self, sock: socket.socket) -> None:
        assert self._server is not None and self._log is not None
        self._log.thread_id = threading.get_ident()  # before this thread logs anything
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # reported by start(); a thread has nowhere else to raise
            self._error = exc
        finally:
            sock.close()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop as uvicorn does on a signal (no new connections, wait for open ones); 0 if clean."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return None
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._thread = None
        self._detach_log()
        return 1 if thread.is_alive() or self._error is not None else 0

    def _detach_log(self) -> None:
        if self._log is not None:
            logging.getLogger().removeHandler(self._log)
            self._log.close()
            self._log = None

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def _uvicorn_logs_to_root() -> None:
    """uvicorn's loggers follow the root logger, as under `python -m app` (log_config=None).

    Another uvicorn in this process started with its default log config and `log_level=...` (a
    helper server) raises their level and stops their propagation: the access lines would miss
    the server's log.
    """
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.setLevel(logging.NOTSET)
        uvicorn_logger.propagate = True


def _drop_app_stderr_handler() -> None:
    """The lifespan's configure_logging adds a stderr handler to the root logger of this process:
    the server's lines are in its log file, and pytest captures records by itself."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_chatkit_app", False):
            root.removeHandler(handler)


def text_input(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


@dataclass
class StreamResult:
    status: int
    headers: Mapping[str, str]
    events: list[ThreadStreamEvent]
    raw: list[dict[str, Any]]

    def of_type(self, event_type: str) -> list[Any]:
        return [event for event in self.events if event.type == event_type]

    @property
    def thread_id(self) -> str:
        created = self.of_type("thread.created")
        assert created, f"no thread.created in {[e.type for e in self.events]}"
        return str(created[0].thread.id)

    def assistant_text(self) -> str:
        done = [
            event.item
            for event in self.of_type("thread.item.done")
            if event.item.type == "assistant_message"
        ]
        return "\n".join("".join(part.text for part in item.content) for item in done)


class ChatKitClient:
    """Speaks the ChatKit wire format to a server as one user."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 60.0) -> None:
        self.base_url = base_url
        self.token = token
        self.http = httpx2.AsyncClient(base_url=base_url, timeout=timeout, verify=shared_tls())

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    async def request(self, op: str, params: dict[str, Any]) -> httpx2.Response:
        body = json.dumps({"type": op, "params": params})
        return await self.http.post("/api/chatkit", content=body, headers=self._headers())

    async def call(self, op: str, params: dict[str, Any]) -> Any:
        """A non-streaming op; returns the JSON body (asserting 200)."""
        response = await self.request(op, params)
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json")
        return response.json()

    async def stream(self, op: str, params: dict[str, Any]) -> StreamResult:
        """A streaming op; every `data:` frame is validated as a chatkit ThreadStreamEvent."""
        body = json.dumps({"type": op, "params": params})
        async with self.http.stream(
            "POST", "/api/chatkit", content=body, headers=self._headers()
        ) as response:
            if response.status_code != 200:
                await response.aread()
                return StreamResult(response.status_code, response.headers, [], [response.json()])
            assert response.headers["content-type"].startswith("text/event-stream")
            events: list[ThreadStreamEvent] = []
            raw: list[dict[str, Any]] = []
            async for frame in sse_frames(response):
                raw.append(json.loads(frame))
                events.append(_event_adapter.validate_json(frame))
            return StreamResult(response.status_code, response.headers, events, raw)

    async def send(self, text: str, thread_id: str | None = None) -> StreamResult:
        if thread_id is None:
            return await self.stream("threads.create", {"input": text_input(text)})
        return await self.stream(
            "threads.add_user_message", {"thread_id": thread_id, "input": text_input(text)}
        )


async def sse_frames(response: httpx2.Response) -> Any:
    """Yield the payload of each `data:` frame (ChatKit sends no `event:` lines, no [DONE])."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            data = [line[6:] for line in frame.split("\n") if line.startswith("data: ")]
            assert data, f"frame without data: {frame!r}"
            yield "\n".join(data)
    assert buffer.strip() == "", f"trailing partial frame: {buffer!r}"
