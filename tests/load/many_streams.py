"""Many simultaneous streams on one server process: `python -m tests.load.many_streams`.

Starts a throwaway Postgres, the fake model in a process of its own (so it does not share this
process's interpreter with the clients) and one server process with every limit at its default
(MAX_CONCURRENT_TURNS=64, TURN_QUEUE_SECONDS=60, a pool of 20+20). Then N users (default 1,000)
each start a new thread at the same moment; the model answers each with 30 text deltas.

First a warm-up: one tool turn (the model calls `add_task`), then a few text turns at once, so
what a process does once (lazy imports, validators built on first use, the embedded MCP server
and its tool list, the first pool connections) is done; then concurrent /ready checks open the
database pool to its size. Resident memory (VmRSS from /proc) is read just after start, after
the warm-up and with the pool open. Then the phases:
1. held: N streams, the model holding every answer for the first seconds of the phase
   (`--hold`, long enough for all N streams to open), then answering at once. Memory is read
   once all N streams are open, and given per open stream over each reading above; the one over
   the warmed-up process with its pool open is the figure that counts (what N open streams
   weigh, nothing one-time in it). Each stream has its thread and message, and waits for the
   model (64 of them) or for a model slot.
2. burst: N streams at once, the model answering without delay.
3. held again, on the process's heap at its working size: memory over the idle process after
   the phases above (what that heap cannot reuse), `--no-working-size` skips it.
Every phase measures time to the first byte and to the first text delta, p50 and p99.
`--tracemalloc` traces the server's allocations and lists what holds memory per open stream
(tests/load/memory_holders.py; the tracer slows the server several times, so it waits longer).

Every phase requires: every stream 200, no error event, 30 deltas in each, `thread.created`
then the user's item as the first two events (before any wait for a model slot); a pool that
ran dry would fail requests, so it is covered, and its checked-out gauge is reported (sampled).
Every event is validated with chatkit's types after the run. Exits 1 when a check fails.

    python -m tests.load.many_streams [--streams 1000] [--deltas 30] [--memory-only]
                                      [--tracemalloc] [--garbage]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
from chatkit.types import ThreadStreamEvent
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import ServerProcess, text_input
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.load.memory_holders import top_holders
from tests.pg_cluster import start_cluster

DELTA_MARK = b'"assistant_message.content_part.text_delta"'
TOOL_PREFIX = "add task"
SETTLE_SECONDS = 1.0
PROBE = Path(__file__).parents[1] / "bench" / "server_probe.py"
_event_adapter: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)


# ------------------------------------------------------------------ the model, in its own process


def _serve_fake(deltas: int, hold_file: str, pipe: Connection) -> None:
    """The fake model: `deltas` pieces of text, each answer held until the time in `hold_file`."""
    chunks = [f"w{index} " for index in range(deltas)]
    hold = Path(hold_file)

    def responder(request: RecordedRequest) -> Reply:
        if not request.stream:
            return Reply.text("A title")
        if not request.ends_with_tool_result and (request.last_user_text or "").startswith(
            TOOL_PREFIX
        ):
            # A tool turn (warm-up only): `add_task`, then the usual answer.
            return Reply.tool_call("add_task", {"title": request.last_user_text or "task"})
        return Reply.text_chunks(chunks, delay_before=_hold_seconds(hold))

    with FakeLLM() as fake:
        fake.responder = responder
        pipe.send(fake.base_url)
        pipe.recv()  # until told to stop


def _hold_seconds(hold: Path) -> float:
    """How long to hold an answer: until the time written in the hold file."""
    try:
        until = float(hold.read_text() or "0")
    except (OSError, ValueError):
        return 0.0
    return max(0.0, until - time.time())


# ------------------------------------------------------------------ one stream


@dataclass
class StreamOutcome:
    status: int | None = None
    first_byte: float | None = None
    first_delta: float | None = None
    opened: float | None = None  # thread.created received
    ended: float | None = None
    frames: list[bytes] = field(default_factory=list)
    error: str | None = None


async def one_stream(
    http: httpx2.AsyncClient, url: str, token: str, text: str, outcome: StreamOutcome
) -> None:
    body = json.dumps({"type": "threads.create", "params": {"input": text_input(text)}})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    buffer = b""
    try:
        async with http.stream("POST", url, content=body, headers=headers) as response:
            outcome.status = response.status_code
            async for chunk in response.aiter_bytes():
                now = time.perf_counter() - started
                if outcome.first_byte is None:
                    outcome.first_byte = now
                buffer += chunk
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    outcome.frames.append(frame)
                    if outcome.opened is None and b'"thread.created"' in frame:
                        outcome.opened = now
                    if outcome.first_delta is None and DELTA_MARK in frame:
                        outcome.first_delta = now
    except Exception as exc:  # a dropped connection is an outcome to report, not to raise
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.ended = time.perf_counter() - started


def check(outcome: StreamOutcome, deltas: int) -> str | None:
    """What is wrong with one stream, validating every event; None when it is fine."""
    if outcome.error:
        return outcome.error
    if outcome.status != 200:
        return f"status {outcome.status}"
    events = []
    for frame in outcome.frames:
        if not frame.startswith(b"data: "):
            return f"frame without data: {frame[:80]!r}"
        events.append(_event_adapter.validate_json(frame[6:]))
    types = [event.type for event in events]
    if "error" in types:
        return "error event: " + str(next(e for e in events if e.type == "error"))
    if types[:2] != ["thread.created", "thread.item.done"]:
        return f"first events {types[:3]}"
    got = sum(
        1
        for event in events
        if event.type == "thread.item.updated"
        and event.update.type == "assistant_message.content_part.text_delta"
    )
    if got != deltas:
        return f"{got} deltas, not {deltas}"
    return None


# ------------------------------------------------------------------ what the server uses


class Probe:
    """Reads the probe's figures (time in the garbage collector) from the server process."""

    def __init__(self, pid: int, path: Path) -> None:
        self._pid, self._path, self._seen = pid, path, 0

    @property
    def last_dump(self) -> int:
        """The number of the probe's latest dump (its tracemalloc snapshot, when tracing)."""
        return self._seen

    async def gc_seconds(self) -> float:
        """Time in the collector so far; with PROBE_TRACEMALLOC set, also a heap snapshot."""
        return float(sum((await self.dump()).get("gc", {}).values()))

    async def garbage(self) -> dict[str, int]:
        """A full collection in the server (PROBE_GARBAGE set): what it found unreachable."""
        Path(f"{self._path}.garbage").touch()
        return dict((await self.dump()).get("garbage", {}))

    async def dump(self) -> dict[str, Any]:
        """The probe's figures, written on SIGUSR1."""
        self._seen += 1
        os.kill(self._pid, signal.SIGUSR1)
        deadline = time.monotonic() + 60  # a traced heap takes a while to snapshot
        while time.monotonic() < deadline:
            try:
                data = json.loads(self._path.read_text())
                if data["seq"] >= self._seen:
                    return dict(data)
            except (FileNotFoundError, ValueError):
                pass
            await asyncio.sleep(0.02)
        raise RuntimeError("the probe wrote nothing")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def gauge(base_url: str, name: str) -> float:
    text = httpx2.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


@dataclass(frozen=True)
class Baseline:
    """A resident memory reading the one with all streams open is compared to."""

    label: str
    rss_kib: int


@dataclass
class PhaseReport:
    name: str
    streams: int
    seconds: float
    failures: Counter[str]
    first_byte: list[float]
    first_delta: list[float]
    pool_peak: float
    pool_limit: float
    rss_all_open_kib: int | None = None
    gc_seconds: float = 0.0
    cpu_seconds: float = 0.0
    others_cpu: dict[str, float] = field(default_factory=dict)
    # What the memory with all streams open is compared to: (what it is, its VmRSS), first the
    # figure that counts.
    baselines: list[Baseline] = field(default_factory=list)
    db_connections_all_open: int | None = None
    # Streams open when memory was read: all of them, unless some failed before opening.
    open_when_measured: int = 0
    # With --garbage: what a full collection found unreachable with all streams open.
    garbage: dict[str, int] | None = None
    # With --tracemalloc: the probe's snapshots before the phase and with all streams open.
    snapshots: tuple[int, int] | None = None

    def render(self) -> list[str]:
        def pct(values: list[float], p: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] * 1000

        lines = [
            f"{self.name}: {self.streams} streams in {self.seconds:.1f} s, "
            f"{sum(self.failures.values())} failed",
        ]
        for reason, count in self.failures.most_common(5):
            lines.append(f"  {count} x {reason[:200]}")
        if self.first_byte:
            lines.append(
                f"  first byte   p50 {pct(self.first_byte, 0.5):8.1f} ms   "
                f"p99 {pct(self.first_byte, 0.99):8.1f} ms"
            )
        if self.first_delta:
            lines.append(
                f"  first delta  p50 {pct(self.first_delta, 0.5):8.1f} ms   "
                f"p99 {pct(self.first_delta, 0.99):8.1f} ms"
            )
        lines.append(
            f"  database pool: at most {self.pool_peak:.0f} of {self.pool_limit:.0f} "
            "connections checked out"
        )
        lines.append(
            f"  server CPU {self.cpu_seconds:.1f} s ({1000 * self.cpu_seconds / self.streams:.0f} "
            f"ms per stream, {100 * self.cpu_seconds / self.seconds:.0f} % of a core), of which "
            f"{self.gc_seconds:.1f} s in the garbage collector"
        )
        if self.others_cpu:
            lines.append(
                "  CPU of the rest: "
                + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.others_cpu.items())
            )
        if self.rss_all_open_kib is not None:
            connections = (
                f", {self.db_connections_all_open} database connections open"
                if self.db_connections_all_open is not None
                else ""
            )
            lines.append(
                f"  resident memory (VmRSS) with {self.open_when_measured} streams open: "
                f"{self.rss_all_open_kib / 1024:.1f} MiB{connections}; per open stream:"
            )
            for baseline in self.baselines:
                per_stream = (self.rss_all_open_kib - baseline.rss_kib) / max(
                    1, self.open_when_measured
                )
                lines.append(
                    f"    {per_stream:6.1f} KiB over {baseline.label} "
                    f"({baseline.rss_kib / 1024:.1f} MiB)"
                )
            if self.garbage:
                lines.append(
                    f"  unreachable, waiting for the collector: {self.garbage['objects']} objects, "
                    f"{self.garbage['bytes'] / 1024 / 1024:.1f} MiB (shallow sizes)"
                )
        return lines

    @property
    def passed(self) -> bool:
        # A pool that runs dry fails requests (503 after DATABASE_POOL_TIMEOUT): no failure, no
        # dry pool. All connections in use at a peak is only the pool doing its job.
        return not self.failures


async def run_phase(
    name: str,
    *,
    server: ServerProcess,
    tokens: list[str],
    deltas: int,
    hold_file: Path | None,
    probe: Probe,
    others: dict[str, int] | None = None,
    database: Database | None = None,
    text: str = "hello",
    garbage: bool = False,
    client_timeout: float = 300.0,
) -> PhaseReport:
    assert server.process is not None
    pid = server.process.pid
    gc_before = await probe.gc_seconds()
    snapshot_before = probe.last_dump
    snapshot_all_open: int | None = None
    db_connections: int | None = None
    cpu_before = cpu_seconds(pid)
    others_before = {name: cpu_seconds(other) for name, other in (others or {}).items()}
    url = f"{server.base_url}/api/chatkit"
    outcomes = [StreamOutcome() for _ in tokens]
    pool_limit = gauge(server.base_url, "chatkit_db_pool_limit")
    pool_peak = 0.0
    rss_all_open: int | None = None
    open_when_measured = 0
    garbage_found: dict[str, int] | None = None
    limits = httpx2.Limits(max_connections=len(tokens) + 10, max_keepalive_connections=0)
    started = time.perf_counter()
    async with httpx2.AsyncClient(timeout=client_timeout, limits=limits) as http:
        tasks = [
            asyncio.create_task(one_stream(http, url, token, f"{text} {index}", outcome))
            for index, (token, outcome) in enumerate(zip(tokens, outcomes, strict=True))
        ]
        while not all(task.done() for task in tasks):
            await asyncio.sleep(0.2)
            try:
                checked_out = await asyncio.to_thread(
                    gauge, server.base_url, "chatkit_db_pool_checked_out"
                )
            except httpx2.HTTPError:
                checked_out = 0.0  # a busy server may not answer a scrape in time: try again
            pool_peak = max(pool_peak, checked_out)
            # Every stream open (or failed already, e.g. a traced server that ran slow).
            all_open = all(
                outcome.opened is not None or task.done()
                for outcome, task in zip(outcomes, tasks, strict=True)
            )
            if hold_file is not None and rss_all_open is None and all_open:
                open_when_measured = sum(
                    outcome.opened is not None and not task.done()
                    for outcome, task in zip(outcomes, tasks, strict=True)
                )
                # Every stream is open and waiting: this is what N open streams weigh.
                rss_all_open = rss_kib(pid)
                if database is not None:
                    db_connections = await database.connections()
                await probe.gc_seconds()  # with PROBE_TRACEMALLOC set: what holds the memory
                snapshot_all_open = probe.last_dump
                if garbage:
                    garbage_found = await probe.garbage()
        await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    gc_seconds = await probe.gc_seconds() - gc_before
    cpu_used = cpu_seconds(pid) - cpu_before
    others_cpu = {
        name: cpu_seconds(other) - others_before[name] for name, other in (others or {}).items()
    }
    failures: Counter[str] = Counter()
    for outcome in outcomes:
        problem = check(outcome, deltas)
        if problem:
            failures[problem] += 1
    if hold_file is not None and open_when_measured < len(tokens):
        failures["the streams were never all open at once"] += 1
    return PhaseReport(
        name,
        len(tokens),
        seconds,
        failures,
        [o.first_byte for o in outcomes if o.first_byte is not None],
        [o.first_delta for o in outcomes if o.first_delta is not None],
        pool_peak,
        pool_limit,
        rss_all_open,
        gc_seconds,
        cpu_used,
        others_cpu,
        db_connections_all_open=db_connections,
        open_when_measured=open_when_measured,
        garbage=garbage_found,
        snapshots=((snapshot_before, snapshot_all_open) if snapshot_all_open is not None else None),
    )


async def open_pool(base_url: str, checks: int) -> None:
    """`checks` concurrent GET /ready: each holds a pooled connection while it pings."""
    limits = httpx2.Limits(max_connections=checks + 10, max_keepalive_connections=0)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as http:
        answers = await asyncio.gather(*(http.get(f"{base_url}/ready") for _ in range(checks)))
    if any(answer.status_code != 200 for answer in answers):
        raise RuntimeError("a /ready check failed while opening the pool")


@dataclass
class Database:
    """The load's own connection to the cluster: counts the server's connections."""

    admin: asyncpg.Connection
    name: str

    async def connections(self) -> int:
        count = await self.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.name,
        )
        return int(count)


async def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-streams-"))
    hold_file = workdir / "hold"
    cluster = start_cluster()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    fake = context.Process(
        target=_serve_fake, args=(args.deltas, str(hold_file), theirs), daemon=True
    )
    fake.start()
    server: ServerProcess | None = None
    reports: list[PhaseReport] = []
    admin: asyncpg.Connection | None = None
    try:
        base_url = ours.recv()
        admin = await asyncpg.connect(cluster.socket_dsn())
        await admin.execute("CREATE DATABASE streams")
        database = Database(admin, "streams")
        secret = secrets.token_urlsafe(48)
        minter = SharedSecretVerifier(secret)
        env = {
            "DATABASE_URL": cluster.url("streams"),
            "AUTH_JWT_SECRET": secret,
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "load",
            "DATA_DIR": str(workdir),
            "LOG_LEVEL": "WARNING",
        }
        if args.tracemalloc:
            env["PROBE_TRACEMALLOC"] = "1"
            # A traced server is several times slower: streams wait longer for a model slot.
            env["TURN_QUEUE_SECONDS"] = "900"
            env["DATABASE_POOL_TIMEOUT"] = "900"
            env["OPENAI_TIMEOUT"] = "900"
        if args.garbage:
            env["PROBE_GARBAGE"] = "1"
        server = ServerProcess(
            env=env,
            log_path=workdir / "server.log",
            # The bench's probe: `python -m app` that also times the garbage collector.
            argv=[str(PROBE), str(workdir / "probe.json")],
        )
        server.start()
        assert server.process is not None
        pid = server.process.pid
        probe = Probe(pid, workdir / "probe.json")
        fake_pid = fake.pid
        assert fake_pid is not None
        others = {"this client": os.getpid(), "the fake model": fake_pid}
        await asyncio.sleep(SETTLE_SECONDS)
        started = Baseline("the process just started, before any request", rss_kib(pid))
        # Warm-up: one tool turn, then a few text turns at once. What a process does once (lazy
        # imports, validators built on first use, the embedded MCP server and its tool list,
        # the first pool connections) is done before memory is measured against it.
        await run_phase(
            "warm-up, tool turn",
            server=server,
            tokens=[minter.mint("warm-tool")],
            deltas=args.deltas,
            hold_file=None,
            probe=probe,
            text=TOOL_PREFIX,
        )
        await run_phase(
            "warm-up, text turns",
            server=server,
            tokens=[minter.mint(f"warm-{index}") for index in range(args.warm_up)],
            deltas=args.deltas,
            hold_file=None,
            probe=probe,
        )
        await asyncio.sleep(SETTLE_SECONDS)
        warm_connections = await database.connections()
        warm = Baseline(
            f"the warmed-up process (1 tool turn + {args.warm_up} text turns done, "
            f"{warm_connections} database connections open)",
            rss_kib(pid),
        )
        # The pool opened to its size the way a busy process has it: concurrent /ready checks
        # (one connection each, nearly nothing else), so its connections are not counted as
        # memory of the streams.
        await open_pool(server.base_url, args.pool_checks)
        await asyncio.sleep(SETTLE_SECONDS)
        pool_connections = await database.connections()
        pool_open = Baseline(
            f"the warmed-up process with its pool open ({pool_connections} database connections, "
            f"after {args.pool_checks} concurrent /ready checks)",
            rss_kib(pid),
        )

        async def held_phase(name: str, prefix: str, baselines: list[Baseline]) -> PhaseReport:
            assert server is not None
            hold_file.write_text(str(time.time() + args.hold))
            report = await run_phase(
                name,
                server=server,
                tokens=[minter.mint(f"{prefix}-{index}") for index in range(args.streams)],
                deltas=args.deltas,
                hold_file=hold_file,
                probe=probe,
                others=others,
                database=database,
                garbage=args.garbage,
                client_timeout=1800.0 if args.tracemalloc else 300.0,
            )
            hold_file.unlink()
            report.baselines = baselines
            return report

        # Memory with every stream open, on a process that has seen nothing bigger before.
        reports.append(
            await held_phase("held (all open, then answered)", "held", [pool_open, warm, started])
        )
        if not args.memory_only:
            reports.append(
                await run_phase(
                    "burst (answered at once)",
                    server=server,
                    tokens=[minter.mint(f"burst-{index}") for index in range(args.streams)],
                    deltas=args.deltas,
                    hold_file=None,
                    probe=probe,
                    others=others,
                )
            )
        if not (args.memory_only or args.no_working_size):
            # After two phases of N streams the heap keeps its working size: N more streams
            # open on top of it cost only what that heap cannot reuse.
            await asyncio.sleep(SETTLE_SECONDS)
            idle = Baseline(
                "the idle process after the phases above (its heap at working size)",
                rss_kib(pid),
            )
            reports.append(
                await held_phase(
                    "held again, on the heap at working size",
                    "again",
                    [idle, pool_open, warm, started],
                )
            )
    finally:
        if admin is not None:
            await admin.close()
        if server is not None:
            server.stop()
        ours.send("stop")
        fake.join(10)
        cluster.destroy()
    print(
        f"{args.streams} simultaneous streams of {args.deltas} deltas, one server process, "
        "limits at their defaults"
    )
    for report in reports:
        print("\n".join(report.render()))
    if args.tracemalloc:
        print(
            "(traced with tracemalloc: resident memory above includes the tracer's own; "
            f"snapshots in {workdir})"
        )
        first = reports[0]
        if first.snapshots is not None:
            before, after = (workdir / f"probe.json.tracemalloc.{n}" for n in first.snapshots)
            print(f"What holds memory per open stream ({first.name}), by allocation site:")
            per = max(1, first.open_when_measured)
            print("\n".join(top_holders(before, after, per, limit=args.top)))
    passed = all(report.passed for report in reports)
    print("PASSED" if passed else "FAILED")
    return 0 if passed else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000, help="streams at once (1000)")
    parser.add_argument("--deltas", type=int, default=30, help="text deltas per answer (30)")
    parser.add_argument(
        "--hold",
        type=float,
        default=None,
        help="seconds the model holds a held phase's answers while the streams open "
        "(15; 90 with --tracemalloc)",
    )
    parser.add_argument(
        "--warm-up", type=int, default=8, help="text turns of the warm-up, after its tool turn (8)"
    )
    parser.add_argument(
        "--pool-checks",
        type=int,
        default=40,
        help="concurrent /ready checks that open the database pool after the warm-up (40)",
    )
    parser.add_argument(
        "--no-working-size",
        action="store_true",
        help="skip the last phase (memory over the idle process at working size)",
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the warm-up and the first held phase (memory with all streams open)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the server's allocations and list what holds memory per open stream",
    )
    parser.add_argument(
        "--garbage",
        action="store_true",
        help="with all streams open (after reading memory), count what a full collection frees",
    )
    parser.add_argument("--top", type=int, default=25, help="allocation sites listed (25)")
    args = parser.parse_args(argv)
    if args.hold is None:
        args.hold = 90.0 if args.tracemalloc else 15.0
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
