"""The request path end to end over real HTTP: a real uvicorn, Postgres, the offline model."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import httpx2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.harness import InProcessServer, ServerProcess, text_input
from tests.server_fixtures import ClientFactory


async def test_create_thread_streams_valid_events_and_persists(
    offline_server: ServerProcess, make_client: ClientFactory, pg_engine: AsyncEngine
) -> None:
    client = make_client(offline_server.base_url)
    result = await client.send("hello there")
    assert result.status == 200
    assert result.headers["cache-control"] == "no-cache, no-transform"
    assert result.headers["x-accel-buffering"] == "no"
    types = [event.type for event in result.events]
    assert types[0] == "thread.created"
    assert "stream_options" in types
    assert types.count("thread.item.added") >= 1
    deltas = [
        e
        for e in result.of_type("thread.item.updated")
        if e.update.type == "assistant_message.content_part.text_delta"
    ]
    assert len(deltas) > 3, "the answer must stream in pieces"
    answer = result.assistant_text()
    assert "offline demo model" in answer
    assert "".join(d.update.delta for d in deltas) == answer

    thread_id = result.thread_id
    async with pg_engine.connect() as conn:
        rows = (
            await conn.execute(
                text("select type, data from chat_items where thread_id = :t order by seq"),
                {"t": thread_id},
            )
        ).all()
        owner = await conn.scalar(
            text("select user_id from chat_threads where id = :t"), {"t": thread_id}
        )
    assert owner is not None
    assert [row.type for row in rows] == ["user_message", "assistant_message"]
    assert "hello there" in rows[0].data


async def test_second_message_and_every_read_op(
    offline_server: ServerProcess, make_client: ClientFactory
) -> None:
    client = make_client(offline_server.base_url)
    first = await client.send("first message")
    thread_id = first.thread_id
    second = await client.send("second message", thread_id)
    assert second.status == 200
    assert second.of_type("thread.created") == []
    assert "offline demo model" in second.assistant_text()

    listed = await client.call("threads.list", {"limit": 10, "order": "desc"})
    assert thread_id in [t["id"] for t in listed["data"]]

    thread = await client.call("threads.get_by_id", {"thread_id": thread_id})
    assert thread["id"] == thread_id
    assert [item["type"] for item in thread["items"]["data"]] == [
        "user_message",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]

    items = await client.call("items.list", {"thread_id": thread_id, "limit": 2, "order": "asc"})
    assert len(items["data"]) == 2 and items["has_more"] is True
    rest = await client.call(
        "items.list", {"thread_id": thread_id, "limit": 10, "order": "asc", "after": items["after"]}
    )
    assert len(rest["data"]) == 2 and rest["has_more"] is False
    assert rest["data"][0]["content"][0]["text"] == "second message"

    updated = await client.call("threads.update", {"thread_id": thread_id, "title": "Renamed"})
    assert updated["title"] == "Renamed"
    assert (await client.call("threads.get_by_id", {"thread_id": thread_id}))["title"] == "Renamed"

    assert await client.call("threads.delete", {"thread_id": thread_id}) == {}
    gone = await client.request("threads.get_by_id", {"thread_id": thread_id})
    assert gone.status_code == 404


async def test_another_user_sees_nothing(
    offline_server: ServerProcess, make_client: ClientFactory
) -> None:
    alice = make_client(offline_server.base_url)
    bob = make_client(offline_server.base_url)
    thread_id = (await alice.send("alice's secret")).thread_id

    assert (await bob.call("threads.list", {"limit": 50}))["data"] == []
    for op, params in [
        ("threads.get_by_id", {"thread_id": thread_id}),
        ("items.list", {"thread_id": thread_id}),
        ("threads.update", {"thread_id": thread_id, "title": "pwned"}),
        ("threads.delete", {"thread_id": thread_id}),
    ]:
        response = await bob.request(op, params)
        assert response.status_code == 404, op
        assert response.json()["type"] == "not_found"
        assert "secret" not in response.text
    hijack = await bob.stream(
        "threads.add_user_message", {"thread_id": thread_id, "input": text_input("pwned")}
    )
    assert hijack.status == 404 and hijack.events == []

    thread = await alice.call("threads.get_by_id", {"thread_id": thread_id})
    assert thread["title"] == "alice's secret"
    assert len(thread["items"]["data"]) == 2


async def test_bad_requests_get_clear_json_errors(
    offline_server: ServerProcess, make_client: ClientFactory
) -> None:
    client = make_client(offline_server.base_url)
    for body in [
        b"not json",
        b"{}",
        b'{"type": "threads.nope", "params": {}}',
        b'{"type": "threads.create"}',
    ]:
        response = await client.http.post(
            "/api/chatkit", content=body, headers={"Authorization": f"Bearer {client.token}"}
        )
        assert response.status_code == 400, body
        assert set(response.json()) == {"type", "message", "status_code"}
    unknown = await client.stream(
        "threads.add_user_message", {"thread_id": "thr_unknown", "input": text_input("hi")}
    )
    assert unknown.status == 404 and unknown.raw[0]["status_code"] == 404

    anonymous = await client.http.post("/api/chatkit", content=b"{}")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert anonymous.json()["status_code"] == 401


async def test_health_and_ready(offline_server: ServerProcess) -> None:
    async with httpx2.AsyncClient(base_url=offline_server.base_url) as http:
        assert (await http.get("/health")).json() == {"status": "healthy"}
        ready = await http.get("/ready")
        assert ready.status_code == 200


async def test_restart_keeps_everything(
    server_env: dict[str, str], make_client: ClientFactory, tmp_path: Path
) -> None:
    # The first life is a process stopped by SIGTERM; the second runs in this test process, which
    # never shared memory with the first: what it finds was kept in the database.
    server = ServerProcess(env=server_env, log_path=tmp_path / "restart.log")
    user_id = f"user-{uuid.uuid4().hex}"
    server.start()
    try:
        thread_id = (await make_client(server.base_url, user_id).send("remember me")).thread_id
    finally:
        # uvicorn re-raises SIGTERM after a graceful shutdown.
        assert server.stop() in (0, -signal.SIGTERM)
    assert "server.stopping" in server.logs()
    restarted = InProcessServer(env=server_env, log_path=tmp_path / "restarted.log")
    restarted.start()
    try:
        client = make_client(restarted.base_url, user_id)
        thread = await client.call("threads.get_by_id", {"thread_id": thread_id})
        assert thread["items"]["data"][0]["content"][0]["text"] == "remember me"
        second = await client.send("and continue", thread_id)
        assert second.status == 200 and second.assistant_text()
    finally:
        restarted.stop()
