"""Reading a multi-worker server's JSON log: which worker process did what."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.e2e.harness import ServerProcess

# Several workers each import the whole app; on a busy machine that takes a while.
WORKERS_START_SECONDS = 240.0


def log_records(server: ServerProcess) -> list[dict[str, Any]]:
    records = []
    for line in server.logs().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def started_workers(server: ServerProcess) -> set[int]:
    """Pids that logged `server.started` (their lifespan finished)."""
    return {r["pid"] for r in log_records(server) if r.get("event") == "server.started"}


def start_with_workers(server: ServerProcess, count: int) -> set[int]:
    """Start `server` and wait until `count` workers have finished startup; their pids."""
    server.start(timeout=WORKERS_START_SECONDS)
    deadline = time.monotonic() + WORKERS_START_SECONDS
    while time.monotonic() < deadline:
        pids = started_workers(server)
        if len(pids) >= count:
            return pids
        assert server.process is not None and server.process.poll() is None, server.logs()[-4000:]
        time.sleep(0.2)
    raise AssertionError(f"{count} workers did not start:\n{server.logs()[-4000:]}")
