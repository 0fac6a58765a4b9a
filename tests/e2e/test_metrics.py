"""GET /metrics of real servers: counters and histograms move as turns happen.

Turns, failures (the fake model answers 500), stops, refusals (rate limit, busy), auth failures,
tool calls, HTTP requests; then the same with two worker processes (WEB_CONCURRENCY=2), where a
scrape of any worker must report what every worker counted.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import (
    InProcessServer,
    ServerProcess,
    StreamResult,
    sse_frames,
    text_input,
)
from tests.fake_llm import FakeLLM, Reply
from tests.server_fixtures import ClientFactory

METRICS_TOKEN = "scrape-" + uuid.uuid4().hex
QUEUE_SECONDS = 1.0
# Each worker process imports the app (several seconds of CPU) on a machine others share.
STARTUP_SECONDS = 180.0


@dataclass
class Scrape:
    """One parsed exposition: sample name + labels -> value."""

    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels` (0 when none)."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {
            sample_labels[label]
            for sample, sample_labels, _ in self.samples
            if sample == name and label in sample_labels
        }


def scrape(base_url: str, token: str | None = METRICS_TOKEN) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx2.get(f"{base_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]
    return Scrape(samples)


async def wait_for(base_url: str, name: str, expected: float, **labels: str) -> Scrape:
    """Scrape until `name{labels}` reaches `expected` (some counters move after the response)."""
    deadline = time.monotonic() + 10
    while True:
        current = scrape(base_url)
        if current.value(name, **labels) >= expected or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.1)


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.reset()


def _env(server_env: dict[str, str], fake: FakeLLM, **extra: str) -> dict[str, str]:
    return {
        **server_env,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "OPENAI_TIMEOUT": "5",
        "THREAD_TITLES": "first_words",
        "METRICS_TOKEN": METRICS_TOKEN,
        # One turn a minute per user: every test's second turn of a user is refused.
        "RATE_LIMIT_TURNS_PER_MINUTE": "1",
        # One answer at a time, waiting at most QUEUE_SECONDS: a second one ends as busy.
        "MAX_CONCURRENT_TURNS": "1",
        "TURN_QUEUE_SECONDS": str(QUEUE_SECONDS),
        **extra,
    }


@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    """One process's metrics: the app in-process, with its own registry."""
    process = InProcessServer(
        env=_env(server_env, fake, METRICS="true"),
        log_path=tmp_path_factory.mktemp("metrics") / "server.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def two_workers(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = ServerProcess(
        env=_env(
            server_env,
            fake,
            WEB_CONCURRENCY="2",
            RATE_LIMIT_TURNS_PER_MINUTE="0",
            MAX_CONCURRENT_TURNS="64",
        ),
        log_path=tmp_path_factory.mktemp("metrics") / "workers.log",
    )
    process.start(timeout=STARTUP_SECONDS)
    # Ready means one worker answers; the other may still be importing.
    deadline = time.monotonic() + STARTUP_SECONDS
    while len(scrape(process.base_url).label_values("chatkit_db_pool_limit", "pid")) < 2:
        assert time.monotonic() < deadline, "the second worker never started"
        time.sleep(0.2)
    yield process
    process.stop()


# -- the endpoint ------------------------------------------------------------------------------


def test_scrapes_need_the_metrics_token(server: InProcessServer) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
    ):
        response = httpx2.get(f"{server.base_url}/metrics", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json() == {
            "type": "invalid_token",
            "message": "a valid metrics token is required",
            "status_code": 401,
        }
    assert scrape(server.base_url).value("chatkit_streams_open") == 0


# -- turns -------------------------------------------------------------------------------------


async def test_a_turn_counts_as_ok_with_duration_first_token_and_one_model_request(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    before = scrape(server.base_url)
    fake.enqueue(Reply.text("hello there, this is the answer"))
    reply = await make_client(server.base_url).send("hi")
    assert reply.status == 200 and reply.assistant_text() == "hello there, this is the answer"

    after = await wait_for(
        server.base_url,
        "chatkit_turns_total",
        before.value("chatkit_turns_total", outcome="ok") + 1,
        outcome="ok",
    )

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("chatkit_turns_total", outcome="ok") == 1
    assert moved("chatkit_turns_total", outcome="error") == 0
    assert moved("chatkit_turn_duration_seconds_count", outcome="ok") == 1
    assert moved("chatkit_turn_duration_seconds_sum", outcome="ok") > 0
    assert moved("chatkit_turn_first_token_seconds_count") == 1
    assert moved("chatkit_model_requests_total", api="responses") == 1
    assert moved("chatkit_model_failures_total") == 0
    assert moved("chatkit_model_request_duration_seconds_count", api="responses") == 1
    assert moved("chatkit_turn_queue_wait_seconds_count") == 1
    assert (
        moved("chatkit_http_requests_total", method="POST", route="/api/chatkit", status="200") == 1
    )
    assert after.value("chatkit_streams_open") == 0
    # Raw paths and ids never become labels.
    assert after.label_values("chatkit_http_requests_total", "route") <= {
        "/api/chatkit",
        "/health",
        "/ready",
        "/metrics",
        "/mcp",
        "/",
        "unmatched",
    }


async def test_tool_calls_count_by_tool_and_outcome(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    before = scrape(server.base_url)
    fake.enqueue(Reply.tool_call("add_task", {"title": "water plants"}), Reply.text("Added."))
    reply = await make_client(server.base_url).send("add water plants")
    assert reply.assistant_text() == "Added."
    after = await wait_for(
        server.base_url,
        "chatkit_tool_calls_total",
        before.value("chatkit_tool_calls_total", tool="add_task", outcome="ok") + 1,
        tool="add_task",
        outcome="ok",
    )
    assert after.value("chatkit_tool_calls_total", tool="add_task", outcome="ok") == (
        before.value("chatkit_tool_calls_total", tool="add_task", outcome="ok") + 1
    )
    assert after.value("chatkit_tool_call_duration_seconds_count", tool="add_task") == (
        before.value("chatkit_tool_call_duration_seconds_count", tool="add_task") + 1
    )
    # One request for the tool call, one for the answer after it.
    assert after.value("chatkit_model_requests_total", api="responses") == (
        before.value("chatkit_model_requests_total", api="responses") + 2
    )


async def test_a_tool_error_result_counts_as_error(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    before = scrape(server.base_url)
    # No such task: the TODO server answers with an error result, which goes back to the model.
    fake.enqueue(
        Reply.tool_call("complete_task", {"task_id": "task_doesnotexist"}), Reply.text("Sorry.")
    )
    reply = await make_client(server.base_url).send("complete it")
    assert reply.assistant_text() == "Sorry."
    after = await wait_for(
        server.base_url,
        "chatkit_tool_calls_total",
        before.value("chatkit_tool_calls_total", tool="complete_task", outcome="error") + 1,
        tool="complete_task",
        outcome="error",
    )
    assert after.value("chatkit_tool_calls_total", tool="complete_task", outcome="error") == (
        before.value("chatkit_tool_calls_total", tool="complete_task", outcome="error") + 1
    )
    assert after.value("chatkit_tool_calls_total", tool="complete_task", outcome="ok") == (
        before.value("chatkit_tool_calls_total", tool="complete_task", outcome="ok")
    )


async def test_a_model_failure_counts_a_failed_request_and_an_error_turn(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    before = scrape(server.base_url)
    fake.enqueue(Reply.error(500, "boom"))
    reply = await make_client(server.base_url).send("hi")
    assert reply.of_type("error"), [event.type for event in reply.events]
    after = await wait_for(
        server.base_url,
        "chatkit_turns_total",
        before.value("chatkit_turns_total", outcome="error") + 1,
        outcome="error",
    )
    assert after.value("chatkit_turns_total", outcome="error") == (
        before.value("chatkit_turns_total", outcome="error") + 1
    )
    assert after.value("chatkit_model_failures_total", api="responses", kind="http_5xx") == (
        before.value("chatkit_model_failures_total", api="responses", kind="http_5xx") + 1
    )
    assert after.value("chatkit_turns_total", outcome="ok") == before.value(
        "chatkit_turns_total", outcome="ok"
    )


async def test_a_stopped_answer_counts_as_cancelled(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    before = scrape(server.base_url)
    fake.enqueue(Reply.text_chunks([f"word{i} " for i in range(40)], delay_between=0.1))
    client = make_client(server.base_url)
    body = json.dumps({"type": "threads.create", "params": {"input": text_input("story")}})
    async with client.http.stream(
        "POST", "/api/chatkit", content=body, headers={"Authorization": f"Bearer {client.token}"}
    ) as response:
        async for frame in sse_frames(response):
            event = json.loads(frame)
            if event["type"] == "thread.item.updated" and "delta" in event["update"]:
                break  # the stop button
    after = await wait_for(
        server.base_url,
        "chatkit_turns_total",
        before.value("chatkit_turns_total", outcome="cancelled") + 1,
        outcome="cancelled",
    )
    assert after.value("chatkit_turns_total", outcome="cancelled") == (
        before.value("chatkit_turns_total", outcome="cancelled") + 1
    )
    assert after.value("chatkit_turn_first_token_seconds_count") == (
        before.value("chatkit_turn_first_token_seconds_count") + 1
    )
    # The stream's slot was given back.
    assert after.value("chatkit_streams_open") == 0


# -- refusals ----------------------------------------------------------------------------------


async def test_a_rate_limited_turn_counts_as_refused(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(server.base_url)
    fake.enqueue(Reply.text("first"))
    assert (await client.send("one")).status == 200
    before = scrape(server.base_url)
    refused = await client.send("two")
    assert refused.status == 429 and refused.raw[0]["type"] == "rate_limited"
    after = scrape(server.base_url)
    assert after.value("chatkit_refusals_total", reason="rate_limit") == (
        before.value("chatkit_refusals_total", reason="rate_limit") + 1
    )
    assert after.value("chatkit_turns_total", outcome="refused") == (
        before.value("chatkit_turns_total", outcome="refused") + 1
    )
    assert after.value(
        "chatkit_http_requests_total", method="POST", route="/api/chatkit", status="429"
    ) == (
        before.value(
            "chatkit_http_requests_total", method="POST", route="/api/chatkit", status="429"
        )
        + 1
    )
    # Nothing reached the model for the refused turn.
    assert after.value("chatkit_model_requests_total") == before.value(
        "chatkit_model_requests_total"
    )


async def _hold_a_stream(
    server: InProcessServer, fake: FakeLLM, client_factory: ClientFactory
) -> asyncio.Task[StreamResult]:
    """Start a turn whose answer takes ~3 s; returns the task reading it."""
    fake.enqueue(Reply.text_chunks(["slow "] * 30, delay_between=0.1))
    client = client_factory(server.base_url)
    task = asyncio.create_task(client.send("slow one"))
    deadline = time.monotonic() + 10
    while scrape(server.base_url).value("chatkit_streams_open") < 1:
        assert time.monotonic() < deadline, "the stream never opened"
        await asyncio.sleep(0.05)
    return task


async def test_streams_open_and_queue_wait_while_the_only_slot_is_taken(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    before = scrape(server.base_url)
    holder = await _hold_a_stream(server, fake, make_client)
    during = scrape(server.base_url)
    assert during.value("chatkit_streams_open") == 1

    busy = await make_client(server.base_url).send("no room")
    # The wait is inside the stream: the thread and the message went out, then an error event.
    assert busy.status == 200
    assert [event.type for event in busy.events][:2] == ["thread.created", "thread.item.done"]
    errors = busy.of_type("error")
    assert len(errors) == 1 and "busy" in (errors[0].message or "") and errors[0].allow_retry
    after_busy = scrape(server.base_url)
    # The refused request waited the whole queue time before giving up.
    waited = after_busy.value("chatkit_turn_queue_wait_seconds_sum") - during.value(
        "chatkit_turn_queue_wait_seconds_sum"
    )
    assert waited >= QUEUE_SECONDS * 0.9
    assert after_busy.value("chatkit_turn_queue_wait_seconds_bucket", le="0.5") == (
        during.value("chatkit_turn_queue_wait_seconds_bucket", le="0.5")
    )

    assert (await holder).status == 200
    final = await wait_for(
        server.base_url,
        "chatkit_turns_total",
        before.value("chatkit_turns_total", outcome="ok") + 1,
        outcome="ok",
    )
    assert final.value("chatkit_streams_open") == 0


async def test_a_busy_refusal_counts_as_refused(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    holder = await _hold_a_stream(server, fake, make_client)
    before = scrape(server.base_url)
    busy = await make_client(server.base_url).send("no room")
    after = scrape(server.base_url)
    await holder
    assert busy.status == 200 and busy.of_type("error")
    assert after.value("chatkit_refusals_total", reason="busy") == (
        before.value("chatkit_refusals_total", reason="busy") + 1
    )
    assert after.value("chatkit_turns_total", outcome="refused") == (
        before.value("chatkit_turns_total", outcome="refused") + 1
    )


async def test_a_second_turn_on_a_busy_thread_counts_as_refused(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    fake.enqueue(Reply.text_chunks(["slow "] * 30, delay_between=0.1))
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(server.base_url, user_id)
    body = json.dumps({"type": "threads.create", "params": {"input": text_input("first")}})
    async with client.http.stream(
        "POST", "/api/chatkit", content=body, headers={"Authorization": f"Bearer {client.token}"}
    ) as response:
        frames = sse_frames(response)
        thread_id = None
        async for frame in frames:
            event = json.loads(frame)
            if event["type"] == "thread.created":
                thread_id = event["thread"]["id"]
                break
        assert thread_id is not None
        before = scrape(server.base_url)
        second = await make_client(server.base_url, user_id).send("again", thread_id)
        after = scrape(server.base_url)
        async for _ in frames:
            pass  # let the first answer finish
    assert second.status == 409 and second.raw[0]["type"] == "thread_busy"
    assert after.value("chatkit_refusals_total", reason="thread_busy") == (
        before.value("chatkit_refusals_total", reason="thread_busy") + 1
    )
    assert after.value("chatkit_turns_total", outcome="refused") == (
        before.value("chatkit_turns_total", outcome="refused") + 1
    )


# -- auth failures -----------------------------------------------------------------------------


async def test_auth_failures_count_by_reason(
    server: InProcessServer, minter: SharedSecretVerifier
) -> None:
    now = int(time.time())
    cases = {
        "missing": {},
        "malformed": {"Authorization": "Bearer not-a-jwt"},
        "expired": {
            "Authorization": "Bearer "
            + minter.mint(f"user-{uuid.uuid4().hex}", iat=now - 7200, exp=now - 3600)
        },
        "signature": {
            "Authorization": "Bearer "
            + SharedSecretVerifier("another-secret-" + "x" * 40).mint("someone")
        },
    }
    body = json.dumps({"type": "threads.list", "params": {"limit": 5}})
    for reason, headers in cases.items():
        before = scrape(server.base_url)
        async with httpx2.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/api/chatkit", content=body, headers=headers)
        assert response.status_code == 401, reason
        after = scrape(server.base_url)
        assert after.value("chatkit_auth_failures_total", reason=reason) == (
            before.value("chatkit_auth_failures_total", reason=reason) + 1
        ), reason
        assert after.value("chatkit_auth_failures_total") == (
            before.value("chatkit_auth_failures_total") + 1
        ), reason


# -- the database pool -------------------------------------------------------------------------


def test_the_pool_gauges_report_this_processs_pool(server: InProcessServer) -> None:
    current = scrape(server.base_url)
    assert current.value("chatkit_db_pool_limit") == 20 + 20  # the default size and overflow
    assert current.value("chatkit_db_pool_checked_out") == 0  # nothing is running now


# -- several workers ---------------------------------------------------------------------------


async def test_two_workers_report_the_sum_of_both(
    two_workers: ServerProcess, fake: FakeLLM, make_client: ClientFactory
) -> None:
    fake.responder = lambda request: Reply.text(f"answer to {request.last_user_text}")
    before = scrape(two_workers.base_url)
    # Both workers keep a live pool gauge in the shared directory, each under its own pid
    # (a scrape without multiprocess mode would show one process and no pid label).
    assert len(before.label_values("chatkit_db_pool_limit", "pid")) == 2
    turns = 12
    clients = [make_client(two_workers.base_url) for _ in range(turns)]
    # One connection each: the kernel spreads new connections over both workers.
    replies = await asyncio.gather(*(c.send(f"q{i}") for i, c in enumerate(clients)))
    assert all(reply.status == 200 for reply in replies)
    expected = before.value("chatkit_turns_total", outcome="ok") + turns
    await wait_for(two_workers.base_url, "chatkit_turns_total", expected, outcome="ok")
    # Whichever worker answers the scrape, it reports every worker's turns.
    for _ in range(8):
        current = scrape(two_workers.base_url)
        assert current.value("chatkit_turns_total", outcome="ok") == expected
        assert current.value("chatkit_model_requests_total", api="responses") == (
            before.value("chatkit_model_requests_total", api="responses") + turns
        )
        assert current.value("chatkit_streams_open") == 0
    pids_that_answered = current.label_values("chatkit_db_pool_limit", "pid")
    assert len(pids_that_answered) == 2
