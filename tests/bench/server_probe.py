"""`python -m app` with a counter of outbound HTTP requests, for `make bench`.

Run as a script, with the tree to measure first on PYTHONPATH (so it works for any commit):

    PYTHONPATH=<tree> python tests/bench/server_probe.py <counts-file>

Every request sent through an httpx2 client is counted by kind: MCP requests (to a path ending
in /mcp) by JSON-RPC method, model requests by path; time in the garbage collector is summed.
On SIGUSR1 the counts are written to <counts-file> as JSON with a sequence number, so the bench
can read them at a point it chooses. With PROBE_TRACEMALLOC set, each dump after the first also
writes a tracemalloc snapshot; with PROBE_GARBAGE set, a dump asked for by creating
<counts-file>.garbage first runs a full collection and reports what it freed.
Counting happens where the server sends, so an in-process (ASGI) MCP server counts the same as
one across the network.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from typing import Any

import httpx2

_counts: Counter[str] = Counter()
_dumps = 0
_gc_started = 0.0
_gc_seconds: defaultdict[str, float] = defaultdict(float)
_original_send = httpx2.AsyncClient.send


def _kind(request: httpx2.Request) -> str:
    path = request.url.path
    if path.endswith("/mcp"):
        try:
            payload = json.loads(request.content)
        except Exception:  # a streamed or empty body (GET / DELETE)
            return f"mcp {request.method}"
        method = payload.get("method") if isinstance(payload, dict) else None
        return f"mcp {method or 'response'}"
    if path.endswith(("/responses", "/chat/completions")):
        return "model " + path.rsplit("/v1/", 1)[-1]
    return "other"


async def _counted_send(self: httpx2.AsyncClient, request: httpx2.Request, **kwargs: Any) -> Any:
    _counts[_kind(request)] += 1
    return await _original_send(self, request, **kwargs)


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    """Time spent in the cyclic garbage collector, by generation."""
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        _gc_seconds[f"gen{info['generation']}"] += time.perf_counter() - _gc_started


def _dump(path: str) -> None:
    global _dumps
    _dumps += 1
    if os.environ.get("PROBE_TRACEMALLOC"):
        # Traced from the first dump on (tracing the imports would make startup crawl); then a
        # snapshot per dump, to compare.
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(f"{path}.tracemalloc.{_dumps}")
        else:
            tracemalloc.start(10)
    figures: dict[str, Any] = {"seq": _dumps, "counts": dict(_counts), "gc": dict(_gc_seconds)}
    if os.environ.get("PROBE_GARBAGE") and os.path.exists(f"{path}.garbage"):
        # Asked for (the file exists): what a full collection would free now, then freed.
        os.unlink(f"{path}.garbage")
        figures["garbage"] = _garbage()
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        json.dump(figures, out)
    os.replace(temporary, path)


def _garbage() -> dict[str, int]:
    """Unreachable objects waiting for the collector: how many, their shallow size in bytes."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        size = sum(sys.getsizeof(item) for item in gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return {"objects": found, "bytes": size}


def main() -> int:
    counts_file = sys.argv[1]
    httpx2.AsyncClient.send = _counted_send  # type: ignore[method-assign]
    gc.callbacks.append(_gc_timer)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: _dump(counts_file))
    sys.argv = ["app"]
    from app.__main__ import main as app_main

    return app_main()


if __name__ == "__main__":
    sys.exit(main())
