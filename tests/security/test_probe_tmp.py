from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import httpx2
import pytest

from app.auth.shared_secret import SharedSecretVerifier
from app.main import create_app
from app.settings import Settings
from tests.e2e.conftest import SECRET
from tests.e2e.harness import ServerProcess, text_input


async def test_probe(postgres_url: str, offline_server: ServerProcess, minter: SharedSecretVerifier, tmp_path: Path) -> None:
    settings = Settings(
        database_url=postgres_url,
        auth_jwt_secret=SECRET,
        data_dir=tmp_path,
        mcp_server_url=offline_server.base_url + "/mcp",
        rate_limit_turns_per_minute=0,
        rate_limit_concurrent_streams=0,
        max_body_bytes=65536,
        max_message_chars=1000,
    )
    app = create_app(settings)
    token = minter.mint("probe-user")
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with app.router.lifespan_context(app):
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t") as c:
            async def post(body: bytes, headers: dict[str, str] = h) -> None:
                r = await c.post("/api/chatkit", content=body, headers=headers)
                print(repr(body[:80]), r.status_code, r.headers.get("content-type"), r.text[:300])
            await post(json.dumps({"type": "threads.get_by_id", "params": {"thread_id": "thr_\x00x"}}).encode())
            await post(json.dumps({"type": "threads.get_by_id", "params": {"thread_id": "x" * 10000}}).encode())
            await post(json.dumps({"type": "threads.list", "params": {"after": "thr_\x00x"}}).encode())
            await post(json.dumps({"type": "items.list", "params": {"thread_id": "thr_x", "limit": 10**30}}).encode())
            await post(json.dumps({"type": "threads.list", "params": {"limit": 10**30}}).encode())
            await post(json.dumps({"type": "threads.list", "params": {"limit": -5}}).encode())
            await post(b'{"type":"threads.list","params":{"limit":1e308}}')
            await post(b'{"type":"threads.list","params":{"limit":Infinity}}')
            await post(b'{"type":"threads.list","params":{"limit":NaN}}')
            await post(b'{"type":"threads.list","params":{"after":"\xff\xfe"}}')
            await post(b'{"type":"threads.list","params":{"x":' + b"[" * 1000 + b"]" * 1000 + b"}}")
            await post(b'{"type":"threads.list","params":{"x":' + b"[" * 30000 + b"}}")
            await post(b'{"type":"threads.list","params":{}}', {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
            await post(b'type=threads.list', {"Authorization": f"Bearer {token}", "Content-Type": "application/x-www-form-urlencoded"})
            await post(json.dumps({"type": "threads.list", "params": {}, "zzz": 1, "metadata": {"a": [1]}}).encode())
            await post(json.dumps({"type": "threads.get_by_id", "params": {"thread_id": 5}}).encode())
            await post(json.dumps({"type": "threads.update", "params": {"thread_id": "thr_\x00", "title": "x"}}).encode())
            await post(json.dumps({"type": "threads.create", "params": {"input": text_input("hello\x00world")}}).encode())
            await post(json.dumps({"type": "threads.create", "params": {"input": text_input("add task a\x00b")}}).encode())
            await post(json.dumps({"type": "items.feedback", "params": {"thread_id": "thr_x", "item_ids": ["\x00"], "kind": "positive"}}).encode())
            await post(json.dumps({"type": "input.transcribe", "params": {"audio_base64": "!!", "mime_type": "x"}}).encode())
            await post(json.dumps({"type": "threads.create", "params": {"input": {"content": [{"type": "input_tag", "id": "x", "text": "hi", "data": {}, "interactive": False}], "attachments": [], "inference_options": {}}}}).encode())
            await post(json.dumps({"type": "threads.create", "params": {"input": {"content": [{"type": "input_text", "text": "hi"}], "attachments": [], "inference_options": {"model": "x" * 100, "tool_choice": {"id": "zz"}}}}}).encode())
