"""Two servers in different time zones on one database agree on order (issue 9, item 4).

The SDK stamps items with naive `datetime.now()`, the local time of the process. One server runs
under TZ=Asia/Tokyo (UTC+9), the other under TZ=UTC; messages of one thread alternate between
them. Stored and compared as local time, Tokyo's items sort nine hours late, history reaches the
model out of order and it answers an older message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import ChatKitClient, ServerProcess
from tests.fake_llm import FakeLLM, RecordedRequest, Reply

ZONES = ("Asia/Tokyo", "UTC")


@pytest.fixture(scope="module", autouse=True)
def echoing(fake: FakeLLM) -> None:
    fake.responder = echo


def echo(request: RecordedRequest) -> Reply:
    return Reply.text(f"answer to: {request.last_user_text}")


@pytest.fixture(scope="module")
def zoned_servers(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        for zone in ZONES:
            env = {
                **server_env,
                "TZ": zone,
                "OPENAI_BASE_URL": fake.base_url,
                "OPENAI_API_KEY": "test-key",
                "OPENAI_MAX_RETRIES": "0",
                "THREAD_TITLES": "first_words",
            }
            name = zone.replace("/", "-")
            server = ServerProcess(env=env, log_path=tmp_path_factory.mktemp(name) / "s.log")
            server.start()
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_alternating_servers_keep_order_and_answer_the_last_message(
    zoned_servers: list[ServerProcess], fake: FakeLLM, minter: SharedSecretVerifier
) -> None:
    token = minter.mint(f"user-tz-{uuid.uuid4().hex}")
    clients = [ChatKitClient(server.base_url, token) for server in zoned_servers]
    try:
        sent: list[str] = []
        thread_id: str | None = None
        for n in range(6):
            client = clients[n % 2]
            text = f"message {n} via {ZONES[n % 2]}"
            fake.reset()
            fake.responder = echo
            result = await client.send(text, thread_id)
            assert result.status == 200 and not result.of_type("error"), result.raw[-2:]
            thread_id = thread_id or result.thread_id
            sent.append(text)
            # The model saw the whole history in order, ending with this message.
            (request,) = [r for r in fake.model_requests() if r.stream]
            assert request.user_texts == sent, request.user_texts
            assert result.assistant_text() == f"answer to: {text}"

        for client in clients:  # each server lists the thread the same way
            items = await client.call(
                "items.list", {"thread_id": thread_id, "order": "asc", "limit": 50}
            )
            texts = [
                (item["type"], item["content"][0]["text"])
                for item in items["data"]
                if item["type"] in ("user_message", "assistant_message")
            ]
            expected = []
            for text in sent:
                expected += [("user_message", text), ("assistant_message", f"answer to: {text}")]
            assert texts == expected
    finally:
        for client in clients:
            await client.aclose()


async def test_each_server_reports_times_in_its_own_zone(
    zoned_servers: list[ServerProcess], minter: SharedSecretVerifier
) -> None:
    """Times come back as the reading process's naive local time (what the SDK itself makes)."""
    token = minter.mint(f"user-tz-{uuid.uuid4().hex}")
    tokyo, utc = (ChatKitClient(server.base_url, token) for server in zoned_servers)
    try:
        created = await utc.send("what time is it?")
        assert created.status == 200, created.raw
        thread_id = created.thread_id
        seen = {}
        for zone, client in zip(ZONES, (tokyo, utc), strict=True):
            thread = await client.call("threads.get_by_id", {"thread_id": thread_id})
            seen[zone] = datetime.fromisoformat(thread["created_at"])
            assert seen[zone].tzinfo is None
        assert seen["Asia/Tokyo"] - seen["UTC"] == timedelta(hours=9)
        now_utc = datetime.utcnow()
        assert abs(seen["UTC"] - now_utc) < timedelta(minutes=5)
    finally:
        await tokyo.aclose()
        await utc.aclose()
