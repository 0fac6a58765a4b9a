"""examples/nextjs, the Next.js + Better Auth + ChatKit starter: it type-checks and builds, and its
ChatKit fetch (lib/chatkit-fetch.ts) works against the app's own Better Auth and a real server.

Skipped, with the reason, only where Node.js >= 20.19 or npm is missing.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from chatkit.types import ThreadStreamEvent
from pydantic import TypeAdapter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.harness import REPO_ROOT, ServerProcess
from tests.examples.node_project import (
    CommandResult,
    NodeProject,
    NodeUnavailable,
    Toolchain,
    base_environment,
    find_toolchain,
)
from tests.pg_cluster import free_port
from tests.processes import terminate

EXAMPLE_DIR = REPO_ROOT / "examples" / "nextjs"
# Next.js 16 needs 20.9; better-auth's hashing library declares 20.19.
MIN_NODE = (20, 19)
_event_adapter: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)


def _toolchain() -> Toolchain | str:
    try:
        return find_toolchain(MIN_NODE)
    except NodeUnavailable as exc:
        return f"the Next.js starter tests need Node.js >= 20.19 and npm: {exc}"


# Checked at collection, so nothing else (Postgres, servers) starts when Node.js is missing.
TOOLCHAIN = _toolchain()
needs_node = pytest.mark.skipif(
    isinstance(TOOLCHAIN, str), reason=TOOLCHAIN if isinstance(TOOLCHAIN, str) else ""
)


def _fail_unless_ok(result: CommandResult) -> None:
    if result.returncode != 0:
        pytest.fail(result.explain(), pytrace=False)


@pytest.fixture(scope="module")
def project(example_timings: dict[str, float]) -> Iterator[NodeProject]:
    """The example with its dependencies installed by `npm ci`, ours alone until the end.

    `next typegen`, `next build` and `next start` share the example's `.next` folder: another
    pytest process (or xdist worker) waits instead of building over a running app.
    """
    assert isinstance(TOOLCHAIN, Toolchain), "tests that use this fixture are marked needs_node"
    project = NodeProject(EXAMPLE_DIR, TOOLCHAIN)
    result = project.ensure_installed()
    if result is not None:
        _fail_unless_ok(result)
        example_timings["npm ci"] = result.seconds
    with project.exclusive():
        yield project


def test_lock_file_names_no_registry() -> None:
    lock = json.loads((EXAMPLE_DIR / "package-lock.json").read_text())
    resolved = [name for name, entry in lock["packages"].items() if "resolved" in entry and name]
    assert resolved == [], f"package-lock.json records download addresses: {resolved[:5]}"
    assert "omit-lockfile-registry-resolved=true" in (EXAMPLE_DIR / ".npmrc").read_text()


@needs_node
def test_typechecks(project: NodeProject, example_timings: dict[str, float]) -> None:
    # `next typegen` writes next-env.d.ts and the route types that `tsc` reads.
    typegen = project.run([project.toolchain.node, project.bin("next"), "typegen"])
    _fail_unless_ok(typegen)
    result = project.run([project.bin("tsc"), "--noEmit", "-p", "tsconfig.json"])
    _fail_unless_ok(result)
    example_timings["typegen + tsc"] = typegen.seconds + result.seconds


@pytest.fixture(scope="module")
def built(project: NodeProject, example_timings: dict[str, float]) -> CommandResult:
    """`next build` (telemetry off); fails the tests that need it when it fails."""
    result = project.run([project.toolchain.node, project.bin("next"), "build"])
    example_timings["next build"] = result.seconds
    _fail_unless_ok(result)
    return result


@needs_node
def test_builds(built: CommandResult) -> None:
    assert (EXAMPLE_DIR / ".next" / "BUILD_ID").is_file()
    # The routes the README describes, and the chat page rendered per request (session check).
    for route in ("/api/auth/[...all]", "/sign-in", "/sign-up"):
        assert route in built.output, built.output[-3000:]
    assert re.search(r"ƒ /\s", built.output), built.output[-3000:]


@dataclass
class NextApp:
    """`next start` of the built example: its Better Auth issues the tokens."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def next_app(
    project: NodeProject,
    built: CommandResult,
    tmp_path_factory: pytest.TempPathFactory,
    example_timings: dict[str, float],
) -> Iterator[NextApp]:
    workdir = tmp_path_factory.mktemp("nextjs-app")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **base_environment(),
        "BETTER_AUTH_URL": url,
        "BETTER_AUTH_SECRET": secrets.token_urlsafe(32),
        "AUTH_DATABASE_FILE": str(workdir / "auth.db"),
    }
    log_path = workdir / "next.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                project.toolchain.node,
                project.bin("next"),
                "start",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=EXAMPLE_DIR,
            env=env,
            stdout=log,
            stderr=log,
        )
    app = NextApp(url, process, log_path)
    started = time.monotonic()
    deadline = started + 60
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"next start exited early:\n{app.logs()}", pytrace=False)
            try:
                # The first auth request also creates Better Auth's tables.
                if httpx2.get(f"{url}/api/auth/jwks", timeout=5).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"next start did not answer in 60s:\n{app.logs()}", pytrace=False)
            time.sleep(0.2)
        example_timings["next start"] = time.monotonic() - started
        yield app
    finally:
        terminate(process, 10)


@pytest.fixture(scope="module")
def chat_server(
    next_app: NextApp,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    example_timings: dict[str, float],
) -> Iterator[ServerProcess]:
    """The server configured as the starter's README says, trusting the app's Better Auth."""
    workdir = tmp_path_factory.mktemp("nextjs-server")
    server = ServerProcess(
        env={
            "DATABASE_URL": postgres_url,
            "AUTH_JWKS_URL": f"{next_app.url}/api/auth/jwks",
            "AUTH_ISSUER": next_app.url,
            "AUTH_AUDIENCE": next_app.url,
            "AUTH_ALGORITHMS": "EdDSA",
            "CORS_ORIGINS": next_app.url,
            "DATA_DIR": str(workdir / "data"),
        },
        log_path=workdir / "server.log",
    )
    started = time.monotonic()
    server.start()
    example_timings["server start"] = time.monotonic() - started
    yield server
    server.stop()


@needs_node
def test_server_lets_the_app_origin_call_with_chatkit_headers(
    next_app: NextApp, chat_server: ServerProcess
) -> None:
    # The browser's preflight for the page's requests: bearer + the component's own headers.
    response = httpx2.options(
        f"{chat_server.base_url}/api/chatkit",
        headers={
            "Origin": next_app.url,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": (
                "authorization,content-type,chatkit-frame-instance-id,accept-language"
            ),
        },
    )
    assert response.status_code in (200, 204), response.text
    assert response.headers["access-control-allow-origin"] == next_app.url
    granted = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "chatkit-frame-instance-id"} <= granted


@needs_node
async def test_chatkit_fetch_with_better_auth_and_the_server(
    project: NodeProject,
    next_app: NextApp,
    chat_server: ServerProcess,
    pg_engine: AsyncEngine,
    tmp_path: Path,
    example_timings: dict[str, float],
) -> None:
    out_dir = tmp_path / "test-build"
    compiled = project.run(
        [project.bin("tsc"), "-p", "tsconfig.test.json", "--outDir", str(out_dir)]
    )
    _fail_unless_ok(compiled)
    turn_file = tmp_path / "turn.json"
    result = project.run(
        [
            project.toolchain.node,
            "--test",
            "--test-reporter=spec",
            str(out_dir / "tests" / "chatkit-fetch.test.js"),
        ],
        env={
            "STARTER_APP_URL": next_app.url,
            "STARTER_CHAT_API": f"{chat_server.base_url}/api/chatkit",
            "STARTER_TURN_FILE": str(turn_file),
        },
        timeout=300,
    )
    example_timings["node --test"] = compiled.seconds + result.seconds
    if result.returncode != 0:
        pytest.fail(
            f"{result.explain()}\n--- next start ---\n{next_app.logs()}"
            f"\n--- server ---\n{chat_server.logs()[-4000:]}",
            pytrace=False,
        )
    summary = dict(re.findall(r"^\S*\s*(pass|fail|skipped|cancelled) (\d+)$", result.output, re.M))
    assert int(summary.get("pass", "0")) > 0, result.output
    assert summary.get("fail") == summary.get("skipped") == summary.get("cancelled") == "0", (
        result.output
    )

    # The turn the node test streamed: every frame is a ChatKit event, and the thread is stored
    # for the Better Auth user the token named.
    turn: dict[str, Any] = json.loads(turn_file.read_text())
    events = [_event_adapter.validate_python(frame) for frame in turn["frames"]]
    types = [event.type for event in events]
    assert types[0] == "thread.created"
    assert "error" not in types
    workflow_done = [
        event
        for event in events
        if event.type == "thread.item.done" and event.item.type == "workflow"
    ]
    assert workflow_done, f"no tool activity in {types}"
    thread_id = events[0].thread.id  # type: ignore[union-attr]
    async with pg_engine.connect() as conn:
        owner = await conn.scalar(
            text("select user_id from chat_threads where id = :t"), {"t": thread_id}
        )
    assert owner == turn["user_id"]
