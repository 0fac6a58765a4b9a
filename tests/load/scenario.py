"""Many users at once against one real server process: the scenario the load script and test share.

Each user opens one thread and runs its turns in sequence. In every turn the fake model calls
`add_task` with a title naming the user and the turn (`<user>:<turn>`), the recording MCP server
runs it, and the model answers `Added <user>:<turn>.` from the tool result. The run is bounded (a
global deadline, a timeout on every request, no retries), and its outcome is checked from the
outside only: the ChatKit API (items.list, threads.list) and what the MCP server recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from chatkit.types import (
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ErrorEvent,
    Page,
    Thread,
    ThreadCreatedEvent,
    ThreadItem,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
    UserMessageItem,
)
from pydantic import TypeAdapter, ValidationError

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import InProcessServer, ServerProcess, sse_frames, text_input
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.recording_mcp import ToolCallRecord, serve_recording_mcp

CHATKIT_PATH = "/api/chatkit"
TITLE_REPLY = "Load test thread"
# Small pages, so checking a thread of a few turns really pages through items.list.
ITEMS_PAGE_SIZE = 4
MAX_PAGES = 100
VERIFY_CONCURRENCY = 50
SHOWN_FAILURES = 5
# uvicorn re-raises the SIGTERM it handled once shut down, so a clean stop can end as -SIGTERM.
CLEAN_EXIT_CODES = (0, -signal.SIGTERM)

_MARKER = re.compile(r"load-[0-9a-f]+-u\d+:\d+")
_event_adapter: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)
_items_adapter: TypeAdapter[Page[ThreadItem]] = TypeAdapter(Page[ThreadItem])
_threads_adapter: TypeAdapter[Page[Thread]] = TypeAdapter(Page[Thread])


# ------------------------------------------------------------------ the scripted model


def add_task_responder(request: RecordedRequest) -> Reply:
    """First call of a turn: `add_task(<marker>)`; after the tool result: `Added <marker>.`"""
    if not request.stream:
        return Reply.text(TITLE_REPLY)  # the thread-title call, made once per thread
    if request.ends_with_tool_result:
        found = _MARKER.search(request.tool_result_text or "")
        return Reply.text(f"Added {found.group(0) if found else 'nothing'}.")
    found = _MARKER.search(request.last_user_text or "")
    if found is None:
        return Reply.text("No marker in this message.")
    return Reply.tool_call("add_task", {"title": found.group(0)})


# ------------------------------------------------------------------ users and turns


@dataclass(frozen=True)
class LoadUser:
    """One simulated user: an id and a token of its own."""

    user_id: str
    token: str

    @property
    def authorization(self) -> str:
        return f"Bearer {self.token}"

    def marker(self, turn: int) -> str:
        """The task title of this user's turn; the model and the MCP record carry it."""
        return f"{self.user_id}:{turn}"

    def message(self, turn: int) -> str:
        return f"add task {self.marker(turn)}"

    def answer(self, turn: int) -> str:
        return f"Added {self.marker(turn)}."


@dataclass(frozen=True)
class TurnOutcome:
    """What one turn looked like from the client: timings, the thread, and the error kind."""

    user_id: str
    turn: int
    seconds: float
    first_token_seconds: float | None
    thread_id: str | None
    status: int | None
    error: str | None = None
    detail: str = ""


@dataclass
class _TurnWatch:
    """Reads a turn's events as they arrive."""

    started: float
    thread_id: str | None
    first_token_seconds: float | None = None
    answers: list[str] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)

    def see(self, event: ThreadStreamEvent) -> None:
        if isinstance(event, ThreadCreatedEvent):
            self.thread_id = event.thread.id
        elif isinstance(event, ThreadItemUpdatedEvent):
            if (
                isinstance(event.update, AssistantMessageContentPartTextDelta)
                and self.first_token_seconds is None
            ):
                self.first_token_seconds = time.perf_counter() - self.started
        elif isinstance(event, ThreadItemDoneEvent):
            if isinstance(event.item, AssistantMessageItem):
                self.answers.append("".join(part.text for part in event.item.content))
        elif isinstance(event, ErrorEvent):
            self.error_messages.append(
                event.message or f"code {getattr(event.code, 'value', event.code)}, no message"
            )

    def problem(self, expected_answer: str) -> tuple[str, str] | None:
        """The error kind and detail of a turn that streamed to its end, or None when right."""
        if self.error_messages:
            return "error event", self.error_messages[0]
        if self.thread_id is None:
            return "no thread.created event", ""
        if self.answers != [expected_answer]:
            return "wrong answer", repr(self.answers)[:300]
        return None


def _turn_body(user: LoadUser, turn: int, thread_id: str | None) -> str:
    if thread_id is None:
        request: dict[str, Any] = {
            "type": "threads.create",
            "params": {"input": text_input(user.message(turn))},
        }
    else:
        request = {
            "type": "threads.add_user_message",
            "params": {"thread_id": thread_id, "input": text_input(user.message(turn))},
        }
    return json.dumps(request)


def _headers(user: LoadUser) -> dict[str, str]:
    return {"Authorization": user.authorization, "Content-Type": "application/json"}


async def run_turn(
    http: httpx2.AsyncClient,
    user: LoadUser,
    turn: int,
    thread_id: str | None,
    *,
    timeout_seconds: float,
) -> TurnOutcome:
    """One streamed turn, validated event by event; every failure becomes an error kind."""
    watch = _TurnWatch(started=time.perf_counter(), thread_id=thread_id)
    status: int | None = None
    failure: tuple[str, str] | None = None
    try:
        async with (
            asyncio.timeout(timeout_seconds),
            http.stream(
                "POST",
                CHATKIT_PATH,
                content=_turn_body(user, turn, thread_id),
                headers=_headers(user),
            ) as response,
        ):
            status = response.status_code
            if status != 200:
                await response.aread()
                failure = f"HTTP {status}", response.text[:300]
            else:
                async for frame in sse_frames(response):
                    watch.see(_event_adapter.validate_json(frame))
    except TimeoutError:
        failure = "timeout (whole turn)", f"over {timeout_seconds} s"
    except httpx2.TimeoutException as exc:
        failure = f"timeout ({type(exc).__name__})", str(exc)
    except httpx2.HTTPError as exc:
        failure = f"transport ({type(exc).__name__})", str(exc)
    except ValidationError as exc:
        failure = "invalid event", str(exc)[:300]
    except AssertionError as exc:  # sse_frames asserts on broken framing
        failure = "invalid SSE framing", str(exc)[:300]
    if failure is None:
        failure = watch.problem(user.answer(turn))
    return TurnOutcome(
        user_id=user.user_id,
        turn=turn,
        seconds=time.perf_counter() - watch.started,
        first_token_seconds=watch.first_token_seconds,
        thread_id=watch.thread_id,
        status=status,
        error=failure[0] if failure else None,
        detail=failure[1] if failure else "",
    )


async def run_users(
    http: httpx2.AsyncClient,
    users: Sequence[LoadUser],
    *,
    turns: int,
    deadline_seconds: float,
    turn_timeout_seconds: float,
) -> tuple[list[TurnOutcome], dict[str, str], list[str]]:
    """All users at once, each running its turns in sequence in one thread.

    Returns the outcomes of the turns that ended, each user's thread id, and client-side
    exceptions (a bug of this script, not of the server). Outcomes are kept as they come, so
    a deadline leaves the finished turns on record.
    """
    outcomes: list[TurnOutcome] = []
    thread_ids: dict[str, str] = {}

    async def one_user(user: LoadUser) -> None:
        thread_id: str | None = None
        for turn in range(turns):
            outcome = await run_turn(
                http, user, turn, thread_id, timeout_seconds=turn_timeout_seconds
            )
            outcomes.append(outcome)
            thread_id = thread_id or outcome.thread_id
            if thread_id is None:
                return  # no thread to continue: the remaining turns count as not run
            thread_ids[user.user_id] = thread_id

    crashes: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(deadline_seconds):
            results = await asyncio.gather(
                *(one_user(user) for user in users), return_exceptions=True
            )
            crashes = [repr(result) for result in results if isinstance(result, BaseException)]
    return outcomes, thread_ids, crashes


# ------------------------------------------------------------------ checks from the outside


@dataclass(frozen=True)
class Check:
    """One verified property; passed when it has no failures."""

    name: str
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


class _CallFailed(Exception):
    """A non-streaming ChatKit call did not answer 200."""


async def _call(
    http: httpx2.AsyncClient,
    user: LoadUser,
    op: str,
    params: dict[str, Any],
    *,
    statuses: Counter[int],
    timeout_seconds: float,
) -> bytes:
    async with asyncio.timeout(timeout_seconds):
        response = await http.post(
            CHATKIT_PATH, content=json.dumps({"type": op, "params": params}), headers=_headers(user)
        )
    statuses[response.status_code] += 1
    if response.status_code != 200:
        raise _CallFailed(f"{op}: HTTP {response.status_code} {response.text[:200]}")
    return response.content


def _text_of(item: ThreadItem) -> str:
    if isinstance(item, UserMessageItem | AssistantMessageItem):
        return "".join(getattr(part, "text", "") for part in item.content)
    return ""


async def verify_user(
    http: httpx2.AsyncClient,
    user: LoadUser,
    thread_id: str | None,
    *,
    turns: int,
    statuses: Counter[int],
    timeout_seconds: float,
) -> list[str]:
    """Problems with one user's stored conversation: pages through items.list, then threads.list."""
    if thread_id is None:
        return [f"{user.user_id}: no thread was created"]
    items: list[ThreadItem] = []
    after: str | None = None
    try:
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {
                "thread_id": thread_id,
                "limit": ITEMS_PAGE_SIZE,
                "order": "asc",
            }
            if after is not None:
                params["after"] = after
            body = await _call(
                http, user, "items.list", params, statuses=statuses, timeout_seconds=timeout_seconds
            )
            page = _items_adapter.validate_json(body)
            items.extend(page.data)
            if not page.has_more:
                break
            after = page.after
        threads = _threads_adapter.validate_json(
            await _call(
                http,
                user,
                "threads.list",
                {"limit": 10},
                statuses=statuses,
                timeout_seconds=timeout_seconds,
            )
        )
    except (_CallFailed, TimeoutError, httpx2.HTTPError, ValidationError) as exc:
        return [f"{user.user_id}: checking failed: {type(exc).__name__}: {str(exc)[:200]}"]

    problems = []
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        duplicated = sorted(item_id for item_id, n in Counter(ids).items() if n > 1)
        problems.append(f"{user.user_id}: duplicated item ids {duplicated}")
    user_texts = [_text_of(item) for item in items if isinstance(item, UserMessageItem)]
    expected_user = [user.message(turn) for turn in range(turns)]
    if user_texts != expected_user:
        problems.append(f"{user.user_id}: user messages {user_texts}, expected {expected_user}")
    answers = [_text_of(item) for item in items if isinstance(item, AssistantMessageItem)]
    expected_answers = [user.answer(turn) for turn in range(turns)]
    if answers != expected_answers:
        problems.append(
            f"{user.user_id}: assistant messages {answers}, expected {expected_answers}"
        )
    if [thread.id for thread in threads.data] != [thread_id]:
        problems.append(
            f"{user.user_id}: threads.list gave {[t.id for t in threads.data]}, "
            f"expected only {thread_id}"
        )
    return problems


def check_tool_calls(
    calls: Sequence[ToolCallRecord], users: Sequence[LoadUser], *, turns: int
) -> tuple[Check, Check]:
    """Exactly one add_task per turn, and each carried the token of the user its title names."""
    by_id = {user.user_id: user for user in users}
    expected = {user.marker(turn) for user in users for turn in range(turns)}
    count_failures: list[str] = []
    other_tools = Counter(call.tool for call in calls if call.tool != "add_task")
    if other_tools:
        count_failures.append(f"unexpected tool calls: {dict(other_tools)}")
    add_calls = [call for call in calls if call.tool == "add_task"]
    if len(add_calls) != len(expected):
        count_failures.append(f"{len(add_calls)} add_task calls, expected {len(expected)}")
    titles = Counter(str(call.arguments.get("title")) for call in add_calls)
    count_failures += [f"no add_task call for {title}" for title in sorted(expected - set(titles))]
    count_failures += [
        f"{n} add_task calls for {title}" for title, n in sorted(titles.items()) if n > 1
    ]
    count_failures += [f"unexpected title {title!r}" for title in sorted(set(titles) - expected)]

    token_failures: list[str] = []
    for call in add_calls:
        title = str(call.arguments.get("title"))
        owner = by_id.get(title.rsplit(":", 1)[0])
        if owner is None:
            token_failures.append(f"add_task {title!r}: the title names no user of this run")
        elif call.authorization != owner.authorization:
            token_failures.append(f"add_task {title!r}: carried another Authorization header")
        elif call.user_id != owner.user_id:
            token_failures.append(f"add_task {title!r}: the MCP server verified {call.user_id}")
    return (
        Check("the MCP server saw exactly one add_task per turn", tuple(count_failures)),
        Check("every tool call carried its own user's token", tuple(token_failures)),
    )


def server_log_summary(path: Path) -> Counter[str]:
    """Warnings and errors of the server's JSON log, by level, event and error type."""
    summary: Counter[str] = Counter()
    if not path.exists():
        return summary
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            summary["(not JSON) " + line[:80]] += 1
            continue
        if not isinstance(record, dict):
            continue
        level = str(record.get("level", ""))
        if level in ("WARNING", "ERROR", "CRITICAL"):
            error = record.get("error") or record.get("exc_type")
            summary[f"{level} {record.get('event')}" + (f" ({error})" if error else "")] += 1
    return summary


# ------------------------------------------------------------------ the report


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (NaN without samples)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class LoadReport:
    """Figures and verdicts of one run."""

    users: int
    turns: int
    wall_seconds: float
    outcomes: list[TurnOutcome]
    statuses: Counter[int]
    health_seconds: list[float]
    """How long GET /health took, sampled during the load: the server's event-loop lag."""
    checks: list[Check]
    server_log: Path
    server_log_summary: Counter[str]
    model_requests: int
    mcp_calls: int
    deadline_hit: bool
    startup_seconds: float
    verify_seconds: float

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def ok_turns(self) -> list[TurnOutcome]:
        return [outcome for outcome in self.outcomes if outcome.error is None]

    @property
    def errors(self) -> Counter[str]:
        """Failed turns by kind; turns that never ran count as `not run`."""
        errors = Counter(outcome.error for outcome in self.outcomes if outcome.error)
        not_run = self.users * self.turns - len(self.outcomes)
        if not_run:
            errors["not run (deadline, or no thread to continue)"] = not_run
        return errors

    def render(self) -> str:
        ok = self.ok_turns
        turn_ms = [outcome.seconds * 1000 for outcome in ok]
        ttft_ms = [o.first_token_seconds * 1000 for o in ok if o.first_token_seconds is not None]
        health_ms = [seconds * 1000 for seconds in self.health_seconds]
        rate = len(ok) / self.wall_seconds if self.wall_seconds else 0.0
        lines = [
            f"load test: {self.users} users x {self.turns} turns, all at once, one server process",
            f"  wall time            {self.wall_seconds:.1f} s"
            + ("  (global deadline hit)" if self.deadline_hit else ""),
            f"  turns ok             {len(ok)} of {self.users * self.turns}  ({rate:.1f} turns/s)",
            f"  turn time            {_quantiles(turn_ms, ('p50', 'p90', 'p99', 'max'))}",
            f"  first token          {_quantiles(ttft_ms, ('p50', 'p99'))}"
            "  (first assistant text delta)",
            f"  GET /health          {_quantiles(health_ms, ('p50', 'max'))}"
            f"  ({len(health_ms)} samples during the load)",
            "  HTTP statuses        "
            + ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items())),
            f"  fake model requests  {self.model_requests}   MCP tool calls {self.mcp_calls}",
            f"  also                 server start {self.startup_seconds:.1f} s, "
            f"checks over the API {self.verify_seconds:.1f} s",
            "  errors by kind" + ("       none" if not self.errors else ""),
        ]
        for kind, count in self.errors.most_common():
            example = next((o for o in self.outcomes if o.error == kind), None)
            where = (
                f"  e.g. {example.user_id} turn {example.turn}: {example.detail}" if example else ""
            )
            lines.append(_line(f"    {count:>5}  {kind}{where}"))
        lines.append(f"  server log           {self.server_log}")
        for entry, count in self.server_log_summary.most_common(10):
            lines.append(_line(f"    {count:>5}  {entry}"))
        lines.append("checks")
        for check in self.checks:
            lines.append(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}")
            lines += [_line(f"          {failure}") for failure in check.failures[:SHOWN_FAILURES]]
            if len(check.failures) > SHOWN_FAILURES:
                lines.append(f"          (+{len(check.failures) - SHOWN_FAILURES} more)")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


_QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}


def _quantiles(samples_ms: Sequence[float], names: Sequence[str]) -> str:
    return "  ".join(f"{name} {percentile(samples_ms, _QUANTILES[name]):.0f} ms" for name in names)


def _line(text: str, width: int = 300) -> str:
    """One line of the report: the first line of `text`, cut to `width`."""
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= width else first[: width - 1] + "…"


# ------------------------------------------------------------------ the whole run


def _client(base_url: str, *, users: int, timeout_seconds: float) -> httpx2.AsyncClient:
    connections = users + 10  # one per user in flight, so the pool never queues a turn
    return httpx2.AsyncClient(
        base_url=base_url,
        timeout=httpx2.Timeout(timeout_seconds, connect=10.0),
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=False,
    )


def _responder(model_delay_seconds: float) -> Callable[[RecordedRequest], Reply]:
    if not model_delay_seconds:
        return add_task_responder
    return lambda request: add_task_responder(request).with_faults(delay_before=model_delay_seconds)


async def _sample_health(
    http: httpx2.AsyncClient, samples: list[float], *, every_seconds: float = 0.5
) -> None:
    """Time GET /health until cancelled: it does no I/O, so its latency is the loop's lag."""
    while True:
        started = time.perf_counter()
        with contextlib.suppress(httpx2.HTTPError):
            await http.get("/health", timeout=30.0)
            samples.append(time.perf_counter() - started)
        await asyncio.sleep(every_seconds)


async def _verify_all(
    http: httpx2.AsyncClient,
    users: Sequence[LoadUser],
    thread_ids: Mapping[str, str],
    *,
    turns: int,
    statuses: Counter[int],
    timeout_seconds: float,
) -> list[str]:
    semaphore = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def verify(user: LoadUser) -> list[str]:
        async with semaphore:
            return await verify_user(
                http,
                user,
                thread_ids.get(user.user_id),
                turns=turns,
                statuses=statuses,
                timeout_seconds=timeout_seconds,
            )

    results = await asyncio.gather(*(verify(user) for user in users))
    return [problem for problems in results for problem in problems]


def _checks(
    *,
    users: Sequence[LoadUser],
    turns: int,
    outcomes: Sequence[TurnOutcome],
    crashes: Sequence[str],
    statuses: Counter[int],
    thread_problems: Sequence[str],
    calls: Sequence[ToolCallRecord],
    log_summary: Counter[str],
    exit_code: int | None,
) -> list[Check]:
    errors = Counter(outcome.error for outcome in outcomes if outcome.error)
    never_ran = len(users) * turns - len(outcomes)
    return [
        Check(
            "every turn ran and completed without error",
            tuple(f"{n} turns: {kind}" for kind, n in errors.most_common())
            + tuple(crashes)
            + ((f"{never_ran} turns never ran",) if never_ran else ()),
        ),
        Check(
            "zero 5xx responses",
            tuple(f"HTTP {code}: {n}" for code, n in sorted(statuses.items()) if code >= 500),
        ),
        Check(
            "zero error events",
            tuple(
                f"{o.user_id} turn {o.turn}: {o.detail}"
                for o in outcomes
                if o.error == "error event"
            ),
        ),
        Check(
            f"every thread holds exactly {turns} user and {turns} assistant messages, "
            "in order, no duplicated ids",
            tuple(thread_problems),
        ),
        *check_tool_calls(calls, users, turns=turns),
        Check(
            "no ERROR lines (nor unstructured output) in the server log",
            tuple(f"{n} x {e}" for e, n in log_summary.items() if not e.startswith("WARNING")),
        ),
        Check(
            "the server stopped cleanly",
            () if exit_code in CLEAN_EXIT_CODES else (f"exit code {exit_code}",),
        ),
    ]


async def run_load(
    *,
    database_url: str,
    workdir: Path,
    users: int,
    turns: int,
    deadline_seconds: float = 600.0,
    turn_timeout_seconds: float = 120.0,
    call_timeout_seconds: float = 60.0,
    model_delay_seconds: float = 0.0,
    log_level: str = "WARNING",
    server_env: Mapping[str, str] | None = None,
    in_process: bool = False,
) -> LoadReport:
    """Start the fake model, the recording MCP server and one server process; load; verify.

    `call_timeout_seconds` bounds each read and each non-streaming call;
    `model_delay_seconds` delays every model answer (a slower model); `server_env` adds or
    overrides server settings; `in_process` runs the server on a uvicorn in a thread of this
    process (no start-up imports to pay; its log then holds only the server thread's records).
    """
    if users < 1 or turns < 1:
        raise ValueError("users and turns must be at least 1")
    run_id = secrets.token_hex(4)  # users of several runs can share one database
    secret = secrets.token_urlsafe(48)
    minter = SharedSecretVerifier(secret)
    load_users = [
        LoadUser(user_id, minter.mint(user_id))
        for user_id in (f"load-{run_id}-u{index:03d}" for index in range(users))
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    statuses: Counter[int] = Counter()
    health_seconds: list[float] = []
    with FakeLLM() as fake, serve_recording_mcp(secret) as mcp:
        fake.responder = _responder(model_delay_seconds)
        server_class = InProcessServer if in_process else ServerProcess
        server = server_class(
            env={
                "DATABASE_URL": database_url,
                "AUTH_JWT_SECRET": secret,
                "DATA_DIR": str(workdir),
                "OPENAI_BASE_URL": fake.base_url,
                "OPENAI_API_KEY": "load-test",
                "OPENAI_MAX_RETRIES": "0",
                "MCP_SERVER_URL": mcp.url,
                "LOG_LEVEL": log_level,
                # Generous, so the per-user limits never act in this test.
                "RATE_LIMIT_TURNS_PER_MINUTE": "1000",
                "RATE_LIMIT_CONCURRENT_STREAMS": "10",
                **(server_env or {}),
            },
            log_path=workdir / "server.log",
        )
        startup_started = time.perf_counter()
        await asyncio.to_thread(server.start)
        startup_seconds = time.perf_counter() - startup_started
        try:
            async with _client(
                server.base_url, users=users, timeout_seconds=call_timeout_seconds
            ) as http:
                health = asyncio.create_task(_sample_health(http, health_seconds))
                started = time.perf_counter()
                try:
                    outcomes, thread_ids, crashes = await run_users(
                        http,
                        load_users,
                        turns=turns,
                        deadline_seconds=deadline_seconds,
                        turn_timeout_seconds=turn_timeout_seconds,
                    )
                finally:
                    wall_seconds = time.perf_counter() - started
                    health.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await health
                statuses.update(o.status for o in outcomes if o.status is not None)
                verify_started = time.perf_counter()
                thread_problems = await _verify_all(
                    http,
                    load_users,
                    thread_ids,
                    turns=turns,
                    statuses=statuses,
                    timeout_seconds=call_timeout_seconds,
                )
                verify_seconds = time.perf_counter() - verify_started
        finally:
            exit_code = await asyncio.to_thread(server.stop)
        calls = list(mcp.state.calls)
        model_requests = len(fake.model_requests())

    log_summary = server_log_summary(server.log_path)
    return LoadReport(
        users=users,
        turns=turns,
        wall_seconds=wall_seconds,
        outcomes=outcomes,
        statuses=statuses,
        health_seconds=health_seconds,
        checks=_checks(
            users=load_users,
            turns=turns,
            outcomes=outcomes,
            crashes=crashes,
            statuses=statuses,
            thread_problems=thread_problems,
            calls=calls,
            log_summary=log_summary,
            exit_code=exit_code,
        ),
        server_log=server.log_path,
        server_log_summary=log_summary,
        model_requests=model_requests,
        mcp_calls=len(calls),
        deadline_hit=wall_seconds >= deadline_seconds,
        startup_seconds=startup_seconds,
        verify_seconds=verify_seconds,
    )
