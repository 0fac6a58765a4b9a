"""What one turn costs the server, with a zero-latency fake model: `make bench [BASELINE=<ref>]`.

Starts a throwaway Postgres, the fake OpenAI server (in this process) and, per tree and MCP mode,
one real server process (`python -m app`, every setting at its default except the database, the
model's URL, the auth secret and, for the external mode, MCP_SERVER_URL). The external mode runs
the tree's own `python -m app.todo_mcp` beside it. Then it sends turns one after another, each a
new thread (`threads.create`) from one of a few hundred users:

- text turns: the model streams a short answer (10 deltas);
- tool turns: the model calls `add_task`, then streams a short answer.

With `--baseline <ref>` (make: BASELINE=<ref>) that commit is exported beside the working tree
(`git archive` into a temporary directory) and run with this same virtualenv, and the two trees
take turns: round 1 A then B, round 2 B then A, and so on, so drift on a shared machine hits both.

Figures, per MCP mode and kind of turn:
- turn time and time to the first text delta (client side; p50/p95 over all rounds);
- server CPU per turn: utime+stime+cutime+cstime of the server process from /proc/<pid>/stat
  over a batch of turns, divided by its turns (median over rounds);
- database statements per turn: the bench cluster logs every statement of the server's own
  database role (`ALTER ROLE ... SET log_statement = 'all'`, one role per server process); a
  marker query after each batch tells where the batch ends in the log (tests/pg_statements.py).
  Every BEGIN, COMMIT, ROLLBACK, ping and query counts as one. In the embedded mode the TODO
  tool's own statements run in the server process and are counted; in the external mode they
  are the MCP server's, shown on a line of their own;
- model requests per turn: what the fake model received (title requests included);
- MCP HTTP requests per turn: counted where the server sends them (tests/bench/server_probe.py
  wraps httpx2's client), by JSON-RPC method.

    python -m tests.bench.turn_overhead [--baseline REF] [--rounds 4] [--turns 15]
                                        [--modes embedded,external]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx2

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import ChatKitClient, text_input
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.pg_cluster import PostgresCluster, free_port, start_cluster
from tests.pg_statements import StatementLog, log_statements
from tests.processes import terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("server_probe.py")
USERS_PER_SERVER = 300
TEXT_ANSWER = "A short answer of a few words, streamed in small pieces."
TOOL_ANSWER = "Added it to your list, as you asked me to do."
# The text answer as the model streams it (10 deltas; --deltas changes the count).
TEXT_DELTAS = [TEXT_ANSWER[index : index + 6] for index in range(0, len(TEXT_ANSWER), 6)]
DELTA_MARK = b'"assistant_message.content_part.text_delta"'
ERROR_MARK = b'"type":"error"'
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_SECONDS = 0.25


def responder(request: RecordedRequest) -> Reply:
    """Titles, a tool call for messages starting with `add`, short streamed answers."""
    if not request.stream:
        return Reply.text("Bench thread title")
    if request.ends_with_tool_result:
        return Reply.text(TOOL_ANSWER, chunk_size=5)
    if (request.last_user_text or "").startswith("add"):
        return Reply.tool_call("add_task", {"title": request.last_user_text or "task"})
    return Reply.text_chunks(TEXT_DELTAS)


# ------------------------------------------------------------------ trees and processes


@dataclass(frozen=True)
class Tree:
    """A source tree to run: the working tree or an exported commit."""

    key: str  # "a" (working tree) or "b" (baseline); used in role and database names
    label: str
    root: Path


def export_commit(ref: str, into: Path) -> Tree:
    """`git archive` of `ref` into `into` (nothing in the repository changes)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{ref}^{{commit}}"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=REPO_ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return Tree("b", f"baseline {commit}", into)


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    prefixes = ("OPENAI_", "AUTH_", "MCP_", "DATABASE_", "RATE_LIMIT_", "THREAD_", "LOG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited early:\n{log.read_text()[-3000:]}")
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


@dataclass
class ServerUnderTest:
    """One `python -m app` of one tree in one MCP mode, with its own database role."""

    tree: Tree
    mode: str
    role: str
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    tokens: list[str] = field(default_factory=list)
    next_user: int = 0
    dumps_seen: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def counts_file(self) -> Path:
        return self.workdir / "counts.json"

    @property
    def name(self) -> str:
        return f"{self.tree.label} / {self.mode}"

    def start(self, env: dict[str, str]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "server.log"
        full_env = _clean_env(
            {
                **env,
                "PYTHONPATH": str(self.tree.root),
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "DATA_DIR": str(self.workdir / "data"),
            }
        )
        self.process = subprocess.Popen(
            [sys.executable, str(PROBE), str(self.counts_file)],
            cwd=self.workdir,
            env=full_env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait_http(f"{self.base_url}/health", self.process, log, 180)

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 30)
            self.process = None

    def cpu_seconds(self) -> float:
        """utime + stime + cutime + cstime of the server process, in seconds."""
        assert self.process is not None
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(") ", 1)[1].split()
        return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS

    async def http_counts(self) -> Counter[str]:
        """The probe's outbound request counts (and `gc` ms), as of now."""
        assert self.process is not None
        self.dumps_seen += 1
        os.kill(self.process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = json.loads(self.counts_file.read_text())
                if data["seq"] >= self.dumps_seen:
                    counts = Counter(data["counts"])
                    counts["gc ms"] = round(sum(data.get("gc", {}).values()) * 1000)
                    return counts
            except (FileNotFoundError, ValueError):
                pass
            await asyncio.sleep(0.01)
        raise RuntimeError(f"{self.name}: the probe wrote no counts")

    def token(self) -> str:
        token = self.tokens[self.next_user % len(self.tokens)]
        self.next_user += 1
        return token


@dataclass
class McpServerProcess:
    """`python -m app.todo_mcp` of one tree (the external MCP mode)."""

    tree: Tree
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, env: dict[str, str]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "mcp.log"
        host = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.todo_mcp",
                "--host",
                "127.0.0.1",
                *("--port", str(self.port), "--allow-host", host),
            ],
            cwd=self.workdir,
            env=_clean_env({**env, "PYTHONPATH": str(self.tree.root), "LOG_LEVEL": "WARNING"}),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait_http(self.url, self.process, log, 180)

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 30)
            self.process = None


# ------------------------------------------------------------------ statement counting


async def prepare_cluster(
    cluster: PostgresCluster, trees: Sequence[Tree], modes: Sequence[str]
) -> None:
    """Databases and roles per tree; every statement of the servers' roles is logged."""
    admin = await asyncpg.connect(cluster.socket_dsn())
    roles = []
    for tree in trees:
        await admin.execute(f"CREATE DATABASE bench_{tree.key}")
        roles += [f"{tree.key}_{mode}" for mode in modes] + [f"{tree.key}_mcp"]
    await log_statements(admin, *roles)
    await admin.close()


# ------------------------------------------------------------------ turns


@dataclass
class TurnTiming:
    total: float
    first_byte: float
    first_delta: float


async def timed_turn(http: httpx2.AsyncClient, base_url: str, token: str, text: str) -> TurnTiming:
    """One `threads.create` turn, read as it arrives; raises on any error."""
    body = json.dumps({"type": "threads.create", "params": {"input": text_input(text)}})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    first_byte = first_delta = None
    seen = b""
    async with http.stream(
        "POST", f"{base_url}/api/chatkit", content=body, headers=headers
    ) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"turn answered {response.status_code}: {response.text[:300]}")
        async for chunk in response.aiter_bytes():
            now = time.perf_counter()
            if first_byte is None:
                first_byte = now
            seen += chunk
            if first_delta is None and DELTA_MARK in seen:
                first_delta = now
    ended = time.perf_counter()
    if ERROR_MARK in seen or first_delta is None or first_byte is None:
        raise RuntimeError(f"turn failed or streamed no text: {seen[-400:]!r}")
    return TurnTiming(ended - started, first_byte - started, first_delta - started)


async def warm_up(server: ServerUnderTest, turns: int) -> None:
    """A few turns with every event validated against chatkit's types."""
    for index in range(turns):
        for text in (f"hello {index}", f"add warm-up task {index}"):
            client = ChatKitClient(server.base_url, server.token())
            try:
                result = await client.send(text)
            finally:
                await client.aclose()
            assert result.status == 200, result.raw
            assert not result.of_type("error"), result.raw[-1:]
            assert result.assistant_text() in (TEXT_ANSWER, TOOL_ANSWER), result.assistant_text()


# ------------------------------------------------------------------ measurement


KINDS = ("tool", "text")


@dataclass
class Cell:
    """Everything measured for one server and one kind of turn, over all rounds."""

    turns: int = 0
    totals: list[float] = field(default_factory=list)
    first_deltas: list[float] = field(default_factory=list)
    cpu_per_turn: list[float] = field(default_factory=list)  # one value per batch
    statements: int = 0
    mcp_server_statements: int = 0
    gc_ms: int = 0
    model_requests: int = 0
    mcp: Counter[str] = field(default_factory=Counter)


async def run_batch(
    server: ServerUnderTest,
    kind: str,
    turns: int,
    http: httpx2.AsyncClient,
    fake: FakeLLM,
    log: StatementLog,
    cell: Cell,
) -> None:
    await log.take()  # anything before this batch is not its cost
    mcp_before = await server.http_counts()
    model_before = len(fake.model_requests())
    cpu_before = server.cpu_seconds()
    for _ in range(turns):
        index = server.next_user
        text = f"add task {index}" if kind == "tool" else f"hello {index}"
        timing = await timed_turn(http, server.base_url, server.token(), text)
        cell.totals.append(timing.total * 1000)
        cell.first_deltas.append(timing.first_delta * 1000)
    await asyncio.sleep(SETTLE_SECONDS)  # the last turn's releases happen after its stream ends
    cpu_after = server.cpu_seconds()
    statements = await log.take()
    mcp_after = await server.http_counts()
    cell.turns += turns
    cell.cpu_per_turn.append((cpu_after - cpu_before) * 1000 / turns)
    cell.statements += len(statements.get(server.role, []))
    if server.mode == "external":
        cell.mcp_server_statements += len(statements.get(f"{server.tree.key}_mcp", []))
    cell.model_requests += len(fake.model_requests()) - model_before
    mcp_after.subtract(mcp_before)
    cell.mcp.update({key: value for key, value in mcp_after.items() if key.startswith("mcp")})
    cell.gc_ms += mcp_after["gc ms"]


def start_profilers(
    py_spy: str | None, servers: Iterable[ServerUnderTest], workdir: Path
) -> list[subprocess.Popen[bytes]]:
    """py-spy (collapsed stacks, without pausing the server) on each working-tree server."""
    if not py_spy:
        return []
    profilers = []
    for server in servers:
        if server.tree.key != "a" or server.process is None:
            continue
        output = workdir / f"profile-{server.mode}.txt"
        profilers.append(
            subprocess.Popen(
                [
                    *(py_spy, "record", "--nonblocking", "--format", "raw", "--rate", "250"),
                    *("--pid", str(server.process.pid), "--output", str(output)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return profilers


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)


def pct(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def figures(cell: Cell) -> list[tuple[str, float, str]]:
    """(name, value, format) rows of one cell."""
    mcp_total = sum(cell.mcp.values())
    rows = [
        ("turn time p50 (ms)", statistics.median(cell.totals), "{:.1f}"),
        ("turn time p95 (ms)", pct(cell.totals, 0.95), "{:.1f}"),
        ("first delta p50 (ms)", statistics.median(cell.first_deltas), "{:.1f}"),
        ("first delta p95 (ms)", pct(cell.first_deltas, 0.95), "{:.1f}"),
        ("server CPU / turn (ms)", statistics.median(cell.cpu_per_turn), "{:.1f}"),
        ("  of which GC (ms)", cell.gc_ms / cell.turns, "{:.1f}"),
        ("DB statements / turn", cell.statements / cell.turns, "{:.2f}"),
        ("model requests / turn", cell.model_requests / cell.turns, "{:.2f}"),
        ("MCP HTTP requests / turn", mcp_total / cell.turns, "{:.2f}"),
        ("MCP server DB stmts / turn", cell.mcp_server_statements / cell.turns, "{:.2f}"),
    ]
    return rows


def render(
    results: dict[tuple[str, str, str], Cell],
    trees: Sequence[Tree],
    modes: Sequence[str],
    kinds: Sequence[str],
) -> str:
    lines: list[str] = []
    width = 26
    for mode in modes:
        for kind in kinds:
            cells = [results[(tree.key, mode, kind)] for tree in trees]
            turns = cells[0].turns
            lines.append(f"\n{kind} turns, {mode} MCP ({turns} turns per tree)")
            header = f"  {'':<{width}}" + "".join(f"{tree.label:>22}" for tree in trees)
            if len(trees) == 2:
                header += f"{'ratio A/B':>12}"
            lines.append(header)
            table = [figures(cell) for cell in cells]
            for row in range(len(table[0])):
                name, _, fmt = table[0][row]
                values = [rows[row][1] for rows in table]
                line = f"  {name:<{width}}" + "".join(f"{fmt.format(v):>22}" for v in values)
                if len(values) == 2:
                    ratio = values[0] / values[1] if values[1] else float("nan")
                    line += f"{ratio:>12.2f}"
                lines.append(line)
            for tree, cell in zip(trees, cells, strict=True):
                breakdown = ", ".join(
                    f"{key[4:]} {count / cell.turns:.2f}" for key, count in sorted(cell.mcp.items())
                )
                lines.append(f"  MCP by method, {tree.label}: {breakdown or 'none'}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    global TEXT_DELTAS, TEXT_ANSWER
    if args.deltas != len(TEXT_DELTAS):
        TEXT_DELTAS = [f"w{index} " for index in range(args.deltas)]
        TEXT_ANSWER = "".join(TEXT_DELTAS)
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-bench-"))
    trees = [Tree("a", "working tree", REPO_ROOT)]
    if args.baseline:
        trees.append(export_commit(args.baseline, workdir / "baseline"))
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip() in KINDS]
    cluster = start_cluster()
    servers: dict[tuple[str, str], ServerUnderTest] = {}
    mcp_servers: list[McpServerProcess] = []
    secret = secrets.token_urlsafe(48)
    minter = SharedSecretVerifier(secret)
    results: dict[tuple[str, str, str], Cell] = {}
    try:
        await prepare_cluster(cluster, trees, modes)
        with FakeLLM() as fake:
            fake.responder = responder
            common = {
                "AUTH_JWT_SECRET": secret,
                "OPENAI_BASE_URL": fake.base_url,
                "OPENAI_API_KEY": "bench",
            }
            for tree in trees:
                external_url = None
                for mode in modes:
                    role = f"{tree.key}_{mode}"
                    env = {
                        **common,
                        "DATABASE_URL": f"{cluster.url(f'bench_{tree.key}')}".replace(
                            "postgres@", f"{role}@"
                        ),
                    }
                    if mode == "external":
                        if external_url is None:
                            mcp = McpServerProcess(tree, workdir / f"{tree.key}-mcp")
                            mcp.start(
                                {
                                    **common,
                                    "DATABASE_URL": cluster.url(f"bench_{tree.key}").replace(
                                        "postgres@", f"{tree.key}_mcp@"
                                    ),
                                }
                            )
                            mcp_servers.append(mcp)
                            external_url = mcp.url
                        env["MCP_SERVER_URL"] = external_url
                    server = ServerUnderTest(tree, mode, role, workdir / f"{tree.key}-{mode}")
                    server.tokens = [
                        minter.mint(f"bench-{tree.key}-{mode}-{index}")
                        for index in range(USERS_PER_SERVER)
                    ]
                    print(f"starting {server.name} ...", file=sys.stderr)
                    server.start(env)
                    servers[(tree.key, mode)] = server
                    await warm_up(server, args.warm_up)
                    for kind in KINDS:
                        results[(tree.key, mode, kind)] = Cell()
            log = StatementLog(cluster)
            profilers = start_profilers(args.profile, servers.values(), workdir)
            async with httpx2.AsyncClient(timeout=60) as http:
                for round_index in range(args.rounds):
                    order = trees if round_index % 2 == 0 else list(reversed(trees))
                    print(f"round {round_index + 1}/{args.rounds}", file=sys.stderr)
                    for mode in modes:
                        for kind in kinds:
                            for tree in order:
                                await run_batch(
                                    servers[(tree.key, mode)],
                                    kind,
                                    args.turns,
                                    http,
                                    fake,
                                    log,
                                    results[(tree.key, mode, kind)],
                                )
            stop_profilers(profilers)
            await log.aclose()
    finally:
        for server in servers.values():
            server.stop()
        for mcp in mcp_servers:
            mcp.stop()
        if args.keep:
            shutil.copy(cluster.root / "server.log", workdir / "postgres.log")
        cluster.destroy()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        "turn cost with a zero-latency fake model, Postgres, sequential turns "
        f"(each a new thread), {args.rounds} rounds x {args.turns} turns per cell"
    )
    print(render(results, trees, modes, kinds))
    if args.keep:
        print(f"\nserver logs kept in {workdir}")
    return 0


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", help="a git ref to compare with (run interleaved)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    parser.add_argument("--turns", type=int, default=15, help="turns per batch (default 15)")
    parser.add_argument("--warm-up", type=int, default=5, help="warm-up turns of each kind")
    parser.add_argument("--modes", default="embedded,external", help="MCP modes to measure")
    parser.add_argument("--kinds", default="tool,text", help="kinds of turns to measure")
    parser.add_argument("--deltas", type=int, default=10, help="text deltas of a text answer")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--profile",
        metavar="PY_SPY",
        help="path of a py-spy binary: profile the working tree's servers (implies --keep)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    args.keep = args.keep or bool(args.profile)
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
