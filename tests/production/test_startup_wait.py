"""Starting before the database: wait with backoff (DATABASE_STARTUP_TIMEOUT), then one line."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx2
import pytest

from tests.e2e.harness import REPO_ROOT, ServerProcess
from tests.pg_cluster import free_port
from tests.production.conftest import own_cluster

PASSWORD = "startup-pw-never-logged"
TIMEOUT_SECONDS = 3
# Entry points: ours and a plain uvicorn (the lifespan must behave the same under both).
ENTRY_POINTS = {
    "python -m app": ["-m", "app"],
    "uvicorn app.main:app": ["-m", "uvicorn", "app.main:app", "--port", "{port}"],
}


def _env(server_env: dict[str, str], **extra: str) -> dict[str, str]:
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUTH_", "MCP_"))
    }
    return {**inherited, **server_env, "HOST": "127.0.0.1", "LOG_JSON": "false", **extra}


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_no_database_exits_with_one_line(
    entry_point: str, server_env: dict[str, str], tmp_path: Path
) -> None:
    db_port, http_port = free_port(), free_port()  # nothing listens on db_port
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{db_port}/chat?sslmode=disable"
    argv = [part.replace("{port}", str(http_port)) for part in ENTRY_POINTS[entry_point]]
    output = tmp_path / "server.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO_ROOT,
            env=_env(
                server_env,
                DATABASE_URL=url,
                DATABASE_STARTUP_TIMEOUT=str(TIMEOUT_SECONDS),
                PORT=str(http_port),
            ),
            stdout=sink,
            stderr=sink,
        )
        # Importing the app can take long on a busy machine: time the wait from the lifespan on.
        deadline = time.monotonic() + 240
        while "Waiting for application startup" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.02)
        waiting_since = time.monotonic()
        code = process.wait(timeout=60)
        waited = time.monotonic() - waiting_since
    text = output.read_text()
    assert code != 0, text
    # The server's own clock: first failed attempt to the final line, about the timeout.
    stamps = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for line in text.splitlines()
        if "database.waiting" in line or "database.unreachable" in line
    ]
    assert (stamps[-1] - stamps[0]).total_seconds() <= TIMEOUT_SECONDS + 1, text
    # Wall clock to the exit, including interpreter teardown (slow on a loaded machine).
    assert waited < TIMEOUT_SECONDS + 10, (waited, text)
    assert "Traceback" not in text
    assert PASSWORD not in text
    target = f"127.0.0.1:{db_port}/chat"
    final = [line for line in text.splitlines() if "database.unreachable" in line]
    assert len(final) == 1, text
    assert target in final[0] and "cause=ConnectionRefusedError" in final[0]
    waits = [line for line in text.splitlines() if "database.waiting" in line]
    assert len(waits) >= 2 and all(target in line for line in waits), text
    assert all(re.search(r"\bERROR\b", line) is None for line in waits)


async def test_server_comes_up_when_postgres_starts_later(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    cluster = own_cluster(start=False)
    try:
        server = ServerProcess(
            env={
                **server_env,
                "DATABASE_URL": cluster.url("postgres"),
                "DATABASE_STARTUP_TIMEOUT": "120",
            },
            log_path=tmp_path / "late.log",
        )
        starting = asyncio.create_task(asyncio.to_thread(server.start, 240))
        try:
            while not server.log_path.exists() or "database.waiting" not in server.logs():
                assert not starting.done(), server.logs()
                await asyncio.sleep(0.05)
            await asyncio.sleep(2)
            await asyncio.to_thread(cluster.start)
            await starting
            async with httpx2.AsyncClient(base_url=server.base_url) as http:
                ready = await http.get("/ready")
            assert ready.status_code == 200, ready.text
        finally:
            if not starting.done():
                await asyncio.wait([starting])
            server.stop()
        assert "Traceback" not in server.logs()
    finally:
        cluster.destroy()


def test_workers_that_cannot_start_make_a_nonzero_exit(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """uvicorn's own supervisor exits 0 when a worker fails to start; `python -m app` does not."""
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/chat?sslmode=disable"
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO_ROOT,
        env=_env(
            server_env,
            DATABASE_URL=url,
            DATABASE_STARTUP_TIMEOUT="1",
            WEB_CONCURRENCY="2",
            PORT=str(free_port()),
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "database.unreachable" in output
    assert "Traceback" not in output and PASSWORD not in output
