"""Per-turn overhead of the server with a zero-latency fake model: `make bench`.

Starts a throwaway Postgres, the fake OpenAI server and one real server process (embedded TODO
MCP server), then times whole turns from the client's side: N turns that answer with text only,
and N turns that make one MCP tool call first. The fake answers instantly, so the figures are
what the server itself adds (HTTP, auth, store writes, agent run, MCP round trips). A direct
streamed call to the fake is timed too, as the floor. Prints medians and tails; no assertions.

    python -m tests.bench.turn_overhead [--turns 200] [--sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import ChatKitClient, ServerProcess
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.pg_cluster import start_cluster


def tool_once(request: RecordedRequest) -> Reply:
    if request.ends_with_tool_result:
        return Reply.text("Added it to your list.", chunk_size=6)
    if (request.last_user_text or "").startswith("add"):
        return Reply.tool_call("add_task", {"title": request.last_user_text})
    return Reply.text("A short answer of a few words, streamed in small pieces.", chunk_size=6)


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return (
        f"{name:<28} n={len(ordered):<4} median={statistics.median(ordered):7.1f} ms  "
        f"p90={pct(0.9):7.1f} ms  p99={pct(0.99):7.1f} ms  min={ordered[0]:6.1f} ms"
    )


async def time_turns(client: ChatKitClient, text: str, turns: int) -> list[float]:
    samples = []
    for index in range(turns):
        started = time.perf_counter()
        result = await client.send(f"{text} {index}")
        elapsed = (time.perf_counter() - started) * 1000
        assert result.status == 200 and not result.of_type("error"), result.raw[-1:]
        samples.append(elapsed)
    return samples


async def time_fake_directly(fake: FakeLLM, turns: int) -> list[float]:
    client = fake.client()
    samples = []
    for _ in range(turns):
        started = time.perf_counter()
        stream = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
        async for _event in stream:
            pass
        samples.append((time.perf_counter() - started) * 1000)
    await client.close()
    return samples


async def main(turns: int, use_sqlite: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    cluster = None
    if use_sqlite:
        database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        cluster = start_cluster()
        admin = await asyncpg.connect(cluster.url("postgres").replace("+asyncpg", ""))
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        database_url = cluster.url("bench")
    secret = secrets.token_urlsafe(48)
    minter = SharedSecretVerifier(secret)
    with FakeLLM() as fake:
        fake.responder = tool_once
        server = ServerProcess(
            env={
                "DATABASE_URL": database_url,
                "AUTH_JWT_SECRET": secret,
                "DATA_DIR": str(workdir),
                "OPENAI_BASE_URL": fake.base_url,
                "OPENAI_API_KEY": "bench",
                "OPENAI_MAX_RETRIES": "0",
                "LOG_LEVEL": "WARNING",
                "THREAD_TITLES": "first_words",
                # One client sends hundreds of turns a minute: the per-user limits would refuse.
                "RATE_LIMIT_TURNS_PER_MINUTE": "0",
                "RATE_LIMIT_CONCURRENT_STREAMS": "0",
            },
            log_path=workdir / "server.log",
        )
        server.start()
        client = ChatKitClient(server.base_url, minter.mint("bench-user"))
        try:
            await time_turns(client, "warm up", 10)
            await time_turns(client, "add warm-up task", 10)
            floor = await time_fake_directly(fake, turns)
            plain = await time_turns(client, "hello", turns)
            with_tool = await time_turns(client, "add task", turns)
        finally:
            await client.aclose()
            server.stop()
            if cluster is not None:
                cluster.destroy()
    database = "sqlite" if use_sqlite else "postgres"
    print(f"turn overhead, zero-latency fake model, {database}, one client, sequential turns")
    print(summary("fake model direct (floor)", floor))
    print(summary("turn, text only", plain))
    print(summary("turn, one MCP tool call", with_tool))
    print(
        f"server overhead (median turn - median floor): text only "
        f"{statistics.median(plain) - statistics.median(floor):.1f} ms, with tool "
        f"{statistics.median(with_tool) - 2 * statistics.median(floor):.1f} ms "
        "(a tool turn makes two model calls)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of Postgres")
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.sqlite))
