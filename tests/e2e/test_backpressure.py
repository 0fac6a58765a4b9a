"""A client that stops reading does not make the server buffer the rest of the answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.e2e.harness import ServerProcess, text_input
from tests.fake_llm import FakeLLM, Reply
from tests.server_fixtures import ClientFactory

CHUNK = "x" * 2000
CHUNKS = 15_000  # 30 MB of answer text


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_stalled_reader_holds_the_model_stream_back(
    server_env: dict[str, str], fake: FakeLLM, make_client: ClientFactory, tmp_path: Path
) -> None:
    env = {
        **server_env,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "OPENAI_TIMEOUT": "120",
        "THREAD_TITLES": "first_words",
    }
    server = ServerProcess(env=env, log_path=tmp_path / "s.log")
    server.start()
    try:
        assert server.process is not None
        client = make_client(server.base_url)
        fake.enqueue(Reply.text_chunks([CHUNK] * CHUNKS))
        body = json.dumps({"type": "threads.create", "params": {"input": text_input("go")}})
        headers = {"Authorization": f"Bearer {client.token}"}
        before = rss_bytes(server.process.pid)
        async with client.http.stream("POST", "/api/chatkit", content=body, headers=headers) as r:
            chunks = r.aiter_bytes()  # kept referenced: a dropped iterator closes the response
            first = await anext(chunks)
            assert first.startswith(b"data: ")
            # Stop reading for a while: the model could stream all of its 30 MB meanwhile.
            await asyncio.sleep(15)
            grown = rss_bytes(server.process.pid) - before
            assert len(fake.model_requests()) == 1  # the answer is on its way
        # Without backpressure the server buffers the whole answer (about 300 MiB here).
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
    finally:
        server.stop()
