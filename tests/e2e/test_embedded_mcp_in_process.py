"""The embedded TODO MCP server is reached inside the process, whatever port serves the app."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ServerProcess
from tests.server_fixtures import ClientFactory

DEFAULT_PORT = 8001


class ConnectionRecorder:
    """Listens where the server used to call itself and records every connection it gets."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.seen: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    self.seen.append(conn.recv(65536) or b"<connected>")
                except OSError:
                    self.seen.append(b"<connected>")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def recorder() -> Iterator[ConnectionRecorder]:
    try:
        recording = ConnectionRecorder(DEFAULT_PORT)
    except OSError as exc:
        pytest.fail(f"port {DEFAULT_PORT} is taken, so the test cannot watch it: {exc}")
    yield recording
    recording.close()


@pytest.mark.parametrize(
    "extra_args", [[], ["--workers", "2"]], ids=["uvicorn", "uvicorn-2-workers"]
)
async def test_tool_turns_work_under_plain_uvicorn_and_nothing_reaches_port_8001(
    recorder: ConnectionRecorder,
    server_env: dict[str, str],
    make_client: ClientFactory,
    tmp_path: Path,
    extra_args: list[str],
) -> None:
    # PORT/HOST in the environment say 8001; uvicorn serves elsewhere: the app must not care.
    server = ServerProcess(
        env={**server_env, "PORT": str(DEFAULT_PORT)},
        log_path=tmp_path / "uvicorn.log",
        argv=["-m", "uvicorn", "app.main:app", "--port", "{port}", *extra_args],
    )
    server.start()
    try:
        client = make_client(server.base_url)
        for turn in range(4):  # several turns, so both workers serve some
            result = await client.send(f"add task in-process {turn}")
            assert result.status == 200
            assert f"in-process {turn}" in result.assistant_text(), result.raw
            assert not result.of_type("error"), result.raw
            workflows = [
                e.item for e in result.of_type("thread.item.done") if e.item.type == "workflow"
            ]
            assert workflows, "the tool call shows as a workflow item"
        listed = await client.send("list tasks")
        assert all(f"in-process {turn}" in listed.assistant_text() for turn in range(4))
    finally:
        server.stop()
    assert recorder.seen == [], recorder.seen
    assert f"127.0.0.1:{DEFAULT_PORT}/mcp" not in server.logs()


async def test_mcp_route_still_serves_external_clients(
    offline_server: ServerProcess, make_client: ClientFactory
) -> None:
    import httpx2

    client = make_client(offline_server.base_url)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {
        "Authorization": f"Bearer {client.token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    async with httpx2.AsyncClient(timeout=10) as http:
        anonymous = await http.post(f"{offline_server.base_url}/mcp", json=body)
        assert anonymous.status_code == 401
        response = await http.post(f"{offline_server.base_url}/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    names = {tool["name"] for tool in response.json()["result"]["tools"]}
    assert names == {"list_tasks", "add_task", "complete_task", "update_task", "delete_task"}
