"""The server's Prometheus metrics: definitions, recording helpers and the text exposition.

One `Metrics` per app, built in `create_app()`. In a single process the values live in its own
registry. Under several worker processes prometheus-client's multiprocess mode is used: it is
chosen when `PROMETHEUS_MULTIPROC_DIR` is set before prometheus_client is first imported (the
parent process of `python -m app` sets it up, see `multiprocess_dir.py`), each worker
writes its values to files there, and a scrape of any worker adds up all of them.

Labels are small fixed sets (outcomes, reasons, route templates, tool names): never user ids,
thread ids or text.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.observability.multiprocess_dir import multiprocess_dir

TurnOutcome = Literal["ok", "error", "cancelled", "refused"]
RefusalReason = Literal["rate_limit", "busy", "thread_busy"]
ToolOutcome = Literal["ok", "error", "failed", "cancelled"]

TURN_OUTCOMES: tuple[TurnOutcome, ...] = ("ok", "error", "cancelled", "refused")
REFUSAL_REASONS: tuple[RefusalReason, ...] = ("rate_limit", "busy", "thread_busy")
MODEL_FAILURE_KINDS = (
    "timeout",
    "connection",
    "rate_limited",
    "auth",
    "http_4xx",
    "http_5xx",
    "other",
)
# A route label for requests no route matched (unknown paths, CORS preflights): raw paths
# would let any client create series at will.
UNMATCHED_ROUTE = "unmatched"
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.:-]")
MAX_LABEL_CHARS = 64

LONG_SECONDS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
FIRST_TOKEN_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 60)
SHORT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
QUEUE_SECONDS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
HTTP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def forget_dead_processes(path: str) -> None:
    """Drop the live gauges (streams open, pool) of worker processes that no longer run.

    A worker that crashed never removed its own; a replacement worker calls this at start.
    """
    for file in Path(path).glob("gauge_live*_*.db"):
        pid_text = file.stem.rsplit("_", 1)[-1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            continue


def label_value(text: str) -> str:
    """A label value from server-controlled text (a tool name), kept short and plain."""
    return _LABEL_SAFE.sub("_", text)[:MAX_LABEL_CHARS] or "unknown"


def http_method(method: str) -> str:
    return method if method in _KNOWN_METHODS else "other"


class Metrics:
    """Every metric of the server and the small methods the hooks call."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir is not None:
            forget_dead_processes(self.multiprocess_dir)
        # `_created` timestamps double the series count and no dashboard here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        self.turns = Counter(
            "chatkit_turns", "Turns (model answers) by outcome.", ["outcome"], registry=r
        )
        self.turn_duration = Histogram(
            "chatkit_turn_duration_seconds",
            "Time from the start of a turn's answer to its end, by outcome.",
            ["outcome"],
            buckets=LONG_SECONDS,
            registry=r,
        )
        self.first_token = Histogram(
            "chatkit_turn_first_token_seconds",
            "Time from the start of a turn's answer to its first streamed text.",
            buckets=FIRST_TOKEN_SECONDS,
            registry=r,
        )
        self.refusals = Counter(
            "chatkit_refusals",
            "Turns refused before they started, by reason.",
            ["reason"],
            registry=r,
        )
        self.model_requests = Counter(
            "chatkit_model_requests", "Requests to the language model, by API.", ["api"], registry=r
        )
        self.model_failures = Counter(
            "chatkit_model_failures",
            "Failed requests to the language model, by API and kind of failure.",
            ["api", "kind"],
            registry=r,
        )
        self.model_duration = Histogram(
            "chatkit_model_request_duration_seconds",
            "Duration of a model request, to the end of its streamed answer.",
            ["api"],
            buckets=LONG_SECONDS,
            registry=r,
        )
        self.tool_calls = Counter(
            "chatkit_tool_calls",
            "MCP tool calls by tool and outcome (error: the tool reported an error; "
            "failed: no usable answer).",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_duration = Histogram(
            "chatkit_tool_call_duration_seconds",
            "Duration of an MCP tool call, by tool.",
            ["tool"],
            buckets=SHORT_SECONDS,
            registry=r,
        )
        self.streams_open = Gauge(
            "chatkit_streams_open",
            "Streamed answers in progress (summed over worker processes).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "chatkit_turn_queue_wait_seconds",
            "Time a streamed request waited for a free slot (MAX_CONCURRENT_TURNS).",
            buckets=QUEUE_SECONDS,
            registry=r,
        )
        self.auth_failures = Counter(
            "chatkit_auth_failures",
            "Requests refused with 401, by reason.",
            ["reason"],
            registry=r,
        )
        self.http_requests = Counter(
            "chatkit_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "chatkit_http_request_duration_seconds",
            "HTTP request duration to the end of the response body (streams included).",
            ["method", "route"],
            buckets=HTTP_SECONDS,
            registry=r,
        )
        self.pool_checked_out = Gauge(
            "chatkit_db_pool_checked_out",
            "Database connections checked out of this process's pool.",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.pool_limit = Gauge(
            "chatkit_db_pool_limit",
            "Most connections this process's pool opens (DATABASE_POOL_SIZE + "
            "DATABASE_MAX_OVERFLOW).",
            registry=r,
            multiprocess_mode="liveall",
        )
        # Series that exist from the start read 0 instead of missing: rate() and alerts work.
        for outcome in TURN_OUTCOMES:
            self.turns.labels(outcome)
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)

    # -- recording -----------------------------------------------------------------------------

    def turn_finished(
        self, outcome: TurnOutcome, seconds: float, first_token: float | None
    ) -> None:
        self.turns.labels(outcome).inc()
        self.turn_duration.labels(outcome).observe(seconds)
        if first_token is not None:
            self.first_token.observe(first_token)

    def turn_refused(self, reason: RefusalReason) -> None:
        self.refusals.labels(reason).inc()
        self.turns.labels("refused").inc()

    def model_request(self, api: str) -> None:
        self.model_requests.labels(api).inc()

    def model_finished(self, api: str, seconds: float, failure: str | None) -> None:
        self.model_duration.labels(api).observe(seconds)
        if failure is not None:
            self.model_failures.labels(api, failure).inc()

    def tool_finished(self, tool: str, outcome: ToolOutcome, seconds: float) -> None:
        name = label_value(tool)
        self.tool_calls.labels(name, outcome).inc()
        self.tool_duration.labels(name).observe(seconds)

    def auth_failed(self, reason: str) -> None:
        self.auth_failures.labels(label_value(reason)).inc()

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = http_method(method)
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    def watch_pool(self, engine: AsyncEngine, *, limit: int) -> None:
        """Follow the connections `engine`'s pool has checked out, as they move."""
        self.pool_limit.set(limit)
        gauge = self.pool_checked_out
        target = engine.sync_engine

        def checked_out(*_: Any) -> None:
            gauge.inc()

        def returned(*_: Any) -> None:
            gauge.dec()

        event.listen(target, "checkout", checked_out)
        event.listen(target, "checkin", returned)
        # A detached connection leaves the pool without a check-in.
        event.listen(target, "detach", returned)

    # -- exposition ----------------------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition of every worker's values, in the format `accept` asks for."""
        encoder, content_type = choose_encoder(accept or "")
        if self.multiprocess_dir is None:
            return encoder(self.registry), content_type
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return encoder(merged), content_type

    def close(self) -> None:
        """At shutdown: this process's live gauges stop counting toward the sums."""
        if self.multiprocess_dir is not None:
            with contextlib.suppress(OSError):
                mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]
