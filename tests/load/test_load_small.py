"""A small load run in the suite: the same scenario as `python -m tests.load.load_test`.

The server runs in this process (real HTTP on loopback, the app's own uvicorn): a server
process would add seconds of start-up imports to a test about concurrent users. Stopping with
a signal, several processes and a process's whole output have tests of their own
(tests/e2e/test_faults.py, test_multi_process.py, test_settings_and_logs.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.load.scenario import run_load

USERS = 30
TURNS = 3


async def test_concurrent_users_lose_nothing_and_keep_their_own_tokens(
    postgres_url: str, tmp_path: Path
) -> None:
    report = await run_load(
        database_url=postgres_url,
        workdir=tmp_path,
        users=USERS,
        turns=TURNS,
        deadline_seconds=120.0,
        turn_timeout_seconds=60.0,
        in_process=True,
    )
    assert report.passed, report.render()
    assert len(report.ok_turns) == USERS * TURNS
    assert report.mcp_calls == USERS * TURNS
