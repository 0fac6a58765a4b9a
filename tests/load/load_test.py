"""Load test: many users at once against one real server process, verified from the outside.

Starts a throwaway Postgres (or uses --database-url), the fake OpenAI server, the recording MCP
server and one server process; then every user at once opens a thread and runs its turns in
sequence, each turn one `add_task` tool call and a short streamed answer. Prints throughput,
latency and error figures and the checks (no 5xx, no error events, no lost or duplicated items,
every tool call on its own user's token); exits 1 when a check fails.

    python -m tests.load.load_test [--users 200] [--turns 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

import asyncpg

from tests.load.scenario import run_load
from tests.pg_cluster import PostgresCluster, start_cluster

LOAD_DATABASE = "chatkit_load"


async def _create_database(cluster: PostgresCluster) -> str:
    admin = await asyncpg.connect(cluster.url("postgres").replace("+asyncpg", "", 1))
    try:
        await admin.execute(f'CREATE DATABASE "{LOAD_DATABASE}"')
    finally:
        await admin.close()
    return cluster.url(LOAD_DATABASE)  # the server's AUTO_MIGRATE builds the schema


async def main(args: argparse.Namespace) -> int:
    # First, so the MCP library's basicConfig (INFO to stderr) finds logging already set up.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-load-"))
    cluster = None
    database_url: str | None = args.database_url
    if database_url is None:
        cluster = start_cluster()
    try:
        if cluster is not None:
            database_url = await _create_database(cluster)
        assert database_url is not None
        report = await run_load(
            database_url=database_url,
            workdir=workdir,
            users=args.users,
            turns=args.turns,
            deadline_seconds=args.deadline,
            turn_timeout_seconds=args.turn_timeout,
            model_delay_seconds=args.model_delay,
            log_level=args.log_level,
        )
    finally:
        if cluster is not None:
            cluster.destroy()
    print(report.render())
    return 0 if report.passed else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="concurrent users (default 200)")
    parser.add_argument("--turns", type=int, default=3, help="turns per user (default 3)")
    parser.add_argument(
        "--database-url", help="an existing Postgres (default: a throwaway cluster)"
    )
    parser.add_argument(
        "--deadline", type=float, default=600.0, help="global deadline in seconds (default 600)"
    )
    parser.add_argument(
        "--turn-timeout", type=float, default=120.0, help="seconds per turn (default 120)"
    )
    parser.add_argument(
        "--model-delay",
        type=float,
        default=0.0,
        help="seconds before every model answer, as a slower model (default 0)",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="the server's LOG_LEVEL (default WARNING)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
