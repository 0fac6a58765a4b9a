"""Real server processes on loopback and a ChatKit client that validates every streamed event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from chatkit.types import ThreadStreamEvent
from pydantic import TypeAdapter

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
        self.http = httpx2.AsyncClient(base_url=base_url, timeout=timeout)

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
