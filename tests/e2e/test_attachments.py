"""Attachments over real HTTP: both upload strategies, previews, limits, isolation, clean-up.

Real uvicorn servers on Postgres and on SQLite (a process for the restart), the fake model
speaking the real wire (its recorded requests show what the model received), every streamed event
validated by chatkit types.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from chatkit.types import Attachment
from pydantic import TypeAdapter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.harness import (
    ChatKitClient,
    InProcessServer,
    ServerProcess,
    StreamResult,
    text_input,
)
from tests.fake_llm import FakeLLM, RecordedRequest
from tests.server_fixtures import ClientFactory

ATTACHMENT = TypeAdapter(Attachment)
# A 1x1 PNG, and a PNG-signed body past the data-URL preview limit (256 KiB).
SMALL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
LARGE_PNG = SMALL_PNG + bytes(range(256)) * 1200
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
NOTES = b"# Shopping\n- oat milk\n- bread\n"


def data_url(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeLLM) -> None:
    fake.reset()


def _model_env(fake: FakeLLM, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "THREAD_TITLES": "first_words",
        **extra,
    }


def _start(env: dict[str, str], factory: pytest.TempPathFactory, name: str) -> InProcessServer:
    server = InProcessServer(env=env, log_path=factory.mktemp("attachments") / f"{name}.log")
    server.start()
    return server


@pytest.fixture(scope="module")
def pg_server(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    server = _start({**server_env, **_model_env(fake)}, tmp_path_factory, "postgres")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sqlite_server(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    database = tmp_path_factory.mktemp("sqlite") / "chat.db"
    env = {**server_env, **_model_env(fake), "DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    server = _start(env, tmp_path_factory, "sqlite")
    yield server
    server.stop()


@pytest.fixture(params=["postgres", "sqlite"])
def server(request: pytest.FixtureRequest) -> InProcessServer:
    """The same behaviour on both databases."""
    name = "pg_server" if request.param == "postgres" else "sqlite_server"
    server: InProcessServer = request.getfixturevalue(name)
    return server


# -- client side of both strategies ----------------------------------------------------------


def _auth(client: ChatKitClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


async def upload_direct(
    client: ChatKitClient, name: str, data: bytes, mime_type: str
) -> httpx2.Response:
    """What the ChatKit client sends with `uploadStrategy: {type: "direct", uploadUrl}`."""
    return await client.http.post(
        "/api/chatkit/upload", files={"file": (name, data, mime_type)}, headers=_auth(client)
    )


async def direct(client: ChatKitClient, name: str, data: bytes, mime_type: str) -> Any:
    response = await upload_direct(client, name, data, mime_type)
    assert response.status_code == 200, response.text
    return response.json()


async def send_bytes(
    client: ChatKitClient, created: dict[str, Any], data: bytes, *, encoding: str
) -> httpx2.Response:
    """The second phase: the bytes to the descriptor's URL, multipart or raw."""
    descriptor = created["upload_descriptor"]
    headers = {**descriptor["headers"], **_auth(client)}
    if encoding == "multipart":
        return await client.http.request(
            descriptor["method"],
            descriptor["url"],
            files={"file": (created["name"], data, created["mime_type"])},
            headers=headers,
        )
    headers["Content-Type"] = created["mime_type"]
    return await client.http.put(descriptor["url"], content=data, headers=headers)


async def two_phase(
    client: ChatKitClient, name: str, data: bytes, mime_type: str, *, encoding: str = "multipart"
) -> Any:
    created = await client.call(
        "attachments.create", {"name": name, "size": len(data), "mime_type": mime_type}
    )
    ATTACHMENT.validate_python(created)
    response = await send_bytes(client, created, data, encoding=encoding)
    assert response.status_code == 200, response.text
    return response.json()


def with_attachments(message: str, *attachment_ids: str) -> dict[str, Any]:
    return {**text_input(message), "attachments": list(attachment_ids)}


async def send(
    client: ChatKitClient, message: str, *attachment_ids: str, thread_id: str | None = None
) -> StreamResult:
    user_input = with_attachments(message, *attachment_ids)
    if thread_id is None:
        return await client.stream("threads.create", {"input": user_input})
    return await client.stream(
        "threads.add_user_message", {"thread_id": thread_id, "input": user_input}
    )


def user_message_parts(request: RecordedRequest) -> list[dict[str, Any]]:
    """The content parts of the last user message the model received."""
    users = [item for item in request.input_items if item.get("role") == "user"]
    content = users[-1]["content"] if users else []
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


async def rows(engine: AsyncEngine, table: str, user_id: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(f"select count(*) from {table} where user_id = :u"), {"u": user_id}
        )
    return int(count or 0)


# -- both strategies, both databases -----------------------------------------------------


async def test_direct_upload_reaches_the_model_as_an_image(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(server.base_url)
    attachment = await direct(client, "dot.png", SMALL_PNG, "image/png")

    parsed = ATTACHMENT.validate_python(attachment)
    assert parsed.type == "image" and parsed.name == "dot.png"
    assert "upload_descriptor" not in attachment and "metadata" not in attachment
    assert attachment["preview_url"] == data_url("image/png", SMALL_PNG)

    result = await send(client, "what is in this picture?", attachment["id"])
    assert result.status == 200 and not result.of_type("error")
    user_item = result.of_type("thread.item.done")[0].item
    assert [a.id for a in user_item.attachments] == [attachment["id"]]

    parts = user_message_parts(fake.model_requests()[-1])
    assert parts[0] == {"type": "input_text", "text": "what is in this picture?"}
    images = [part for part in parts if part["type"] == "input_image"]
    assert [image["image_url"] for image in images] == [data_url("image/png", SMALL_PNG)]
    assert any("dot.png" in part.get("text", "") for part in parts)  # named for the model

    listed = await client.call("items.list", {"thread_id": result.thread_id, "order": "asc"})
    stored = listed["data"][0]
    assert stored["attachments"][0]["preview_url"] == data_url("image/png", SMALL_PNG)
    assert "metadata" not in stored["attachments"][0]


@pytest.mark.parametrize("encoding", ["multipart", "raw"])
async def test_two_phase_upload_then_message(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory, encoding: str
) -> None:
    client = make_client(server.base_url)
    created = await client.call(
        "attachments.create",
        {"name": "report.pdf", "size": len(PDF), "mime_type": "application/pdf"},
    )
    assert ATTACHMENT.validate_python(created).type == "file"
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "POST"
    assert descriptor["url"] == f"{server.base_url}/api/chatkit/attachments/{created['id']}/upload"

    # Not in a message before its bytes arrive.
    early = await send(client, "summarise", created["id"])
    assert early.status == 400 and "uploading" in early.raw[0]["message"]

    uploaded = await send_bytes(client, created, PDF, encoding=encoding)
    assert uploaded.status_code == 200, uploaded.text
    assert "upload_descriptor" not in uploaded.json()
    again = await send_bytes(client, created, PDF, encoding=encoding)
    assert again.status_code == 409

    notes = await two_phase(client, "notes.md", NOTES, "text/markdown", encoding=encoding)
    result = await send(client, "summarise", created["id"], notes["id"])
    assert result.status == 200 and not result.of_type("error")

    parts = user_message_parts(fake.model_requests()[-1])
    files = [part for part in parts if part["type"] == "input_file"]
    assert files == [
        {
            "type": "input_file",
            "file_data": data_url("application/pdf", PDF),
            "filename": "report.pdf",
        }
    ]
    texts = [part["text"] for part in parts if part["type"] == "input_text"]
    assert any("notes.md" in t and "- oat milk" in t for t in texts)


async def test_a_message_of_only_an_attachment_is_accepted(
    server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(server.base_url)
    attachment = await two_phase(client, "dot.png", SMALL_PNG, "image/png")
    user_input = {"content": [], "attachments": [attachment["id"]], "inference_options": {}}
    result = await client.stream("threads.create", {"input": user_input})
    assert result.status == 200 and not result.of_type("error")
    assert any(p["type"] == "input_image" for p in user_message_parts(fake.model_requests()[-1]))


# -- Chat Completions mode ----------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_completions_server(
    server_env: dict[str, str], fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    env = {**server_env, **_model_env(fake, OPENAI_API="chat_completions")}
    server = _start(env, tmp_path_factory, "chat")
    yield server
    server.stop()


async def test_chat_completions_gets_image_and_file_parts(
    chat_completions_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(chat_completions_server.base_url)
    image = await direct(client, "dot.png", SMALL_PNG, "image/png")
    pdf = await direct(client, "report.pdf", PDF, "application/pdf")
    result = await send(client, "compare", image["id"], pdf["id"])
    assert result.status == 200 and not result.of_type("error")

    request = fake.model_requests()[-1]
    assert request.api == "chat_completions"
    parts = user_message_parts(request)
    assert {
        "type": "image_url",
        "image_url": {"url": data_url("image/png", SMALL_PNG), "detail": "auto"},
    } in parts
    files = [part["file"] for part in parts if part["type"] == "file"]
    assert files == [{"file_data": data_url("application/pdf", PDF), "filename": "report.pdf"}]
    # A second turn resends them as history and still works.
    again = await send(client, "and now?", thread_id=result.thread_id)
    assert again.status == 200 and not again.of_type("error")


# -- previews -----------------------------------------------------------------------------


async def signing_key(engine: AsyncEngine) -> bytes:
    async with engine.connect() as conn:
        secret = await conn.scalar(
            text("select secret from signing_keys where name = 'attachment-previews'")
        )
    assert isinstance(secret, str)
    return secret.encode()


def signed(key: bytes, attachment_id: str, expires: int) -> str:
    digest = hmac.new(key, f"preview\n{attachment_id}\n{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


async def test_large_image_preview_is_a_signed_link_without_bearer(
    pg_server: InProcessServer, make_client: ClientFactory, pg_engine: AsyncEngine
) -> None:
    client = make_client(pg_server.base_url)
    attachment = await direct(client, "big.png", LARGE_PNG, "image/png")
    link = attachment["preview_url"]
    assert link.startswith(
        f"{pg_server.base_url}/api/chatkit/attachments/{attachment['id']}/preview?"
    )

    async with httpx2.AsyncClient() as browser:  # no token, as the ChatKit iframe loads it
        shown = await browser.get(link)
        assert shown.status_code == 200 and shown.content == LARGE_PNG
        assert shown.headers["content-type"] == "image/png"
        assert shown.headers["x-content-type-options"] == "nosniff"

        query = parse_qs(urlsplit(link).query)
        expires, sig = int(query["exp"][0]), query["sig"][0]
        base = link.split("?")[0]
        tampered = await browser.get(base, params={"exp": expires + 600, "sig": sig})
        assert tampered.status_code == 404 and tampered.json()["type"] == "not_found"
        other = await direct(client, "other.png", LARGE_PNG, "image/png")
        reused = await browser.get(
            base.replace(attachment["id"], other["id"]), params={"exp": expires, "sig": sig}
        )
        assert reused.status_code == 404
        key = await signing_key(pg_engine)
        past = int(time.time()) - 10
        expired = await browser.get(
            base, params={"exp": past, "sig": signed(key, attachment["id"], past)}
        )
        assert expired.status_code == 404
        fine = int(time.time()) + 60
        assert (
            await browser.get(
                base, params={"exp": fine, "sig": signed(key, attachment["id"], fine)}
            )
        ).status_code == 200

    # The link grants access by itself: access logs keep the path, not the signature.
    logs = pg_server.logs()
    assert f"/api/chatkit/attachments/{attachment['id']}/preview?exp=" in logs
    assert sig not in logs and "sig=[redacted]" in logs

    # Items come back with a working link (signed again on every read).
    result = await send(client, "look", attachment["id"])
    listed = await client.call("items.list", {"thread_id": result.thread_id, "order": "asc"})
    fresh = listed["data"][0]["attachments"][0]["preview_url"]
    async with httpx2.AsyncClient() as browser:
        assert (await browser.get(fresh)).content == LARGE_PNG


# -- isolation ----------------------------------------------------------------------------


async def test_another_users_attachment_is_404_everywhere(
    pg_server: InProcessServer, make_client: ClientFactory, pg_engine: AsyncEngine
) -> None:
    alice_id = f"user-{uuid.uuid4().hex}"
    alice = make_client(pg_server.base_url, alice_id)
    bob = make_client(pg_server.base_url)
    sent = await direct(alice, "secret.png", LARGE_PNG, "image/png")
    pending = await alice.call(
        "attachments.create", {"name": "later.txt", "size": 5, "mime_type": "text/plain"}
    )
    before = (
        await rows(pg_engine, "chat_attachments", alice_id),
        await rows(pg_engine, "chat_attachment_blobs", alice_id),
    )

    # Upload into Alice's pending attachment.
    stolen = await send_bytes(bob, pending, b"hello", encoding="multipart")
    assert stolen.status_code == 404 and stolen.json()["type"] == "not_found"
    # Name it in a message (new thread and own thread).
    assert (await send(bob, "mine now", sent["id"])).status == 404
    own = await send(bob, "hello")
    refused = await send(bob, "mine now", sent["id"], thread_id=own.thread_id)
    assert refused.status == 404 and refused.raw[0]["type"] == "not_found"
    # Delete it.
    deleted = await bob.request("attachments.delete", {"attachment_id": sent["id"]})
    assert deleted.status_code == 404 and deleted.json()["type"] == "not_found"
    # Preview it: without Alice's link there is no way in.
    async with httpx2.AsyncClient() as browser:
        guessed = await browser.get(
            f"{pg_server.base_url}/api/chatkit/attachments/{sent['id']}/preview",
            params={"exp": int(time.time()) + 60, "sig": "A" * 43},
        )
    assert guessed.status_code == 404

    after = (
        await rows(pg_engine, "chat_attachments", alice_id),
        await rows(pg_engine, "chat_attachment_blobs", alice_id),
    )
    assert after == before
    assert (await send_bytes(alice, pending, b"hello", encoding="multipart")).status_code == 200


# -- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "mime_type", "status", "says"),
    [
        ("page.html", b"<html></html>", "text/html", 400, "not accepted"),
        ("fake.png", b"GIF89a not really a png", "image/png", 400, "not a PNG"),
        ("fake.jpg", b"\x89PNG\r\n\x1a\n but png", "image/jpeg", 400, "not a JPEG"),
        ("fake.pdf", b"hello", "application/pdf", 400, "not a PDF"),
        ("binary.txt", b"ab\x00cd", "text/plain", 400, "not text"),
        ("empty.txt", b"", "text/plain", 400, "empty"),
    ],
)
async def test_direct_upload_limits_store_nothing(
    pg_server: InProcessServer,
    make_client: ClientFactory,
    pg_engine: AsyncEngine,
    name: str,
    data: bytes,
    mime_type: str,
    status: int,
    says: str,
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(pg_server.base_url, user_id)
    response = await upload_direct(client, name, data, mime_type)
    assert response.status_code == status
    body = response.json()
    assert body["status_code"] == status and says in body["message"]
    assert await rows(pg_engine, "chat_attachments", user_id) == 0
    assert await rows(pg_engine, "chat_attachment_blobs", user_id) == 0


async def test_size_limits(
    pg_server: InProcessServer, make_client: ClientFactory, pg_engine: AsyncEngine
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(pg_server.base_url, user_id)
    limit = 10 * 1024 * 1024
    too_big = await upload_direct(client, "huge.txt", b"a" * (limit + 1), "text/plain")
    assert too_big.status_code == 413 and too_big.json()["type"] == "payload_too_large"
    declared = await client.request(
        "attachments.create", {"name": "huge.txt", "size": limit + 1, "mime_type": "text/plain"}
    )
    assert declared.status_code == 413
    refused_type = await client.request(
        "attachments.create",
        {"name": "run.exe", "size": 10, "mime_type": "application/x-msdownload"},
    )
    assert refused_type.status_code == 400 and "not accepted" in refused_type.json()["message"]
    assert await rows(pg_engine, "chat_attachments", user_id) == 0

    # At the limit is fine.
    exactly = await upload_direct(client, "full.txt", b"a" * limit, "text/plain")
    assert exactly.status_code == 200

    # The bytes must be what was declared: count and kind.
    created = await client.call(
        "attachments.create", {"name": "n.txt", "size": 10, "mime_type": "text/plain"}
    )
    short = await send_bytes(client, created, b"only five", encoding="multipart")
    assert short.status_code == 400 and "declared" in short.json()["message"]
    image = await client.call(
        "attachments.create", {"name": "x.png", "size": 9, "mime_type": "image/png"}
    )
    not_image = await send_bytes(client, image, b"not a png", encoding="raw")
    assert not_image.status_code == 400 and "not a PNG" in not_image.json()["message"]
    assert await rows(pg_engine, "chat_attachment_blobs", user_id) == 1  # only full.txt
    no_file = await client.http.post(
        "/api/chatkit/upload",
        files={"other": ("a.txt", b"abc", "text/plain")},
        headers=_auth(client),
    )
    assert no_file.status_code == 400 and "`file`" in no_file.json()["message"]
    for content_type in ("multipart/form-data", "application/octet-stream"):
        malformed = await client.http.post(
            "/api/chatkit/upload",
            content=b"abc",
            headers={**_auth(client), "Content-Type": content_type},
        )
        assert malformed.status_code == 400 and malformed.json()["type"] == "bad_request"


async def test_too_many_attachments_in_one_message(
    pg_server: InProcessServer, make_client: ClientFactory
) -> None:
    client = make_client(pg_server.base_url)
    ids = [(await direct(client, f"{i}.txt", b"x", "text/plain"))["id"] for i in range(11)]
    result = await send(client, "all of them", *ids)
    assert result.status == 400 and "at most 10" in result.raw[0]["message"]


# -- deletion and clean-up ----------------------------------------------------------------


async def test_delete_attachment_and_thread_delete_their_bytes(
    pg_server: InProcessServer, make_client: ClientFactory, pg_engine: AsyncEngine
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(pg_server.base_url, user_id)
    dropped = await direct(client, "drop.txt", b"drop", "text/plain")
    assert await client.call("attachments.delete", {"attachment_id": dropped["id"]}) == {}
    assert await rows(pg_engine, "chat_attachments", user_id) == 0
    assert await rows(pg_engine, "chat_attachment_blobs", user_id) == 0

    kept = await direct(client, "keep.png", LARGE_PNG, "image/png")
    result = await send(client, "look", kept["id"])
    assert await rows(pg_engine, "chat_attachment_blobs", user_id) == 1
    assert await client.call("threads.delete", {"thread_id": result.thread_id}) == {}
    assert await rows(pg_engine, "chat_attachments", user_id) == 0
    assert await rows(pg_engine, "chat_attachment_blobs", user_id) == 0
    async with httpx2.AsyncClient() as browser:
        assert (await browser.get(kept["preview_url"])).status_code == 404


async def test_uploads_never_sent_are_removed_after_a_day(
    pg_server: InProcessServer, make_client: ClientFactory, pg_engine: AsyncEngine
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(pg_server.base_url, user_id)
    await direct(client, "stale.txt", b"old", "text/plain")
    used = await direct(client, "used.txt", b"used", "text/plain")
    await send(client, "keep this", used["id"])
    async with pg_engine.begin() as conn:
        await conn.execute(
            text(
                "update chat_attachments set created_at = created_at - interval '25 hours'"
                " where user_id = :u"
            ),
            {"u": user_id},
        )
    await direct(client, "new.txt", b"new", "text/plain")  # an upload sweeps the caller's
    async with pg_engine.connect() as conn:
        names = set(
            (
                await conn.scalars(
                    text("select data from chat_attachments where user_id = :u"), {"u": user_id}
                )
            ).all()
        )
    assert {json.loads(data)["name"] for data in names} == {"used.txt", "new.txt"}
    assert await rows(pg_engine, "chat_attachment_blobs", user_id) == 2


# -- the offline model, a restart, and the switch -----------------------------------------


async def test_restart_keeps_attachments_and_links(
    server_env: dict[str, str], make_client: ClientFactory, tmp_path: Path
) -> None:
    server = ServerProcess(env=server_env, log_path=tmp_path / "restart.log")  # offline model
    server.start()
    try:
        client = make_client(server.base_url)
        image = await direct(client, "holiday.png", LARGE_PNG, "image/png")
        notes = await two_phase(client, "notes.md", NOTES, "text/markdown")
        server.stop()
        server.start()
        async with httpx2.AsyncClient() as browser:
            assert (await browser.get(image["preview_url"])).content == LARGE_PNG
        result = await send(client, "", image["id"], notes["id"])
        assert result.status == 200 and not result.of_type("error")
        answer = result.assistant_text()
        assert '"holiday.png"' in answer and '"notes.md"' in answer
    finally:
        server.stop()


@pytest.fixture(scope="module")
def disabled_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    server = _start({**server_env, "ATTACHMENTS": "false"}, tmp_path_factory, "disabled")
    yield server
    server.stop()


async def test_attachments_false_answers_feature_not_enabled(
    disabled_server: InProcessServer, make_client: ClientFactory
) -> None:
    client = make_client(disabled_server.base_url)
    ops: list[tuple[str, dict[str, Any]]] = [
        ("attachments.create", {"name": "a.txt", "size": 3, "mime_type": "text/plain"}),
        ("attachments.delete", {"attachment_id": "atc_1"}),
    ]
    for op, params in ops:
        response = await client.request(op, params)
        assert response.status_code == 400 and response.json()["type"] == "feature_not_enabled"
    direct_upload = await upload_direct(client, "a.txt", b"abc", "text/plain")
    assert direct_upload.json()["type"] == "feature_not_enabled"
    target = await client.http.post(
        "/api/chatkit/attachments/atc_1/upload", content=b"abc", headers=_auth(client)
    )
    assert target.json()["type"] == "feature_not_enabled"
    message = await send(client, "see file", "atc_1")
    assert message.status == 400 and message.raw[0]["type"] == "feature_not_enabled"
