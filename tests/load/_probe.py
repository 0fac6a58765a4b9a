import asyncio
import sys
import tempfile
from pathlib import Path

import asyncpg

from tests.load.load_test import _create_database
from tests.load.scenario import run_load
from tests.pg_cluster import start_cluster


async def sample(dsn: str, stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    t = 0
    while not stop.is_set():
        rows = await conn.fetch(
            "SELECT coalesce(state,'-') s, coalesce(wait_event_type,'-') w, coalesce(wait_event,'-') e, count(*) n,"
            " round(max(extract(epoch from now()-state_change))::numeric,2) oldest"
            " FROM pg_stat_activity WHERE datname='chatkit_load' AND pid <> pg_backend_pid() GROUP BY 1,2,3 ORDER BY 4 DESC"
        )
        print(
            t,
            "  ".join(f"{r['s']}/{r['e']}:{r['n']}(max {r['oldest']}s)" for r in rows),
            flush=True,
        )
        t += 1
        await asyncio.sleep(1)
    await conn.close()


async def main() -> None:
    users = int(sys.argv[1])
    env = dict(a.split("=", 1) for a in sys.argv[2:])
    c = start_cluster()
    try:
        url = await _create_database(c)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(url.replace("+asyncpg", ""), stop))
        q = "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched FROM pg_stat_database WHERE datname='chatkit_load'"
        a = await asyncpg.connect(url.replace("+asyncpg", ""))
        before = dict(await a.fetchrow(q))
        r = await run_load(
            database_url=url, workdir=Path(tempfile.mkdtemp()), users=users, turns=3, server_env=env
        )
        stop.set()
        await sampler
        await asyncio.sleep(1)
        after = dict(await a.fetchrow(q))
        print(
            {k: after[k] - before[k] for k in after},
            "per turn:",
            {k: round((after[k] - before[k]) / (users * 3), 1) for k in after},
        )
        for row in await a.fetch(
            "SELECT relname, seq_scan, seq_tup_read, idx_scan, n_live_tup FROM pg_stat_user_tables ORDER BY seq_tup_read DESC"
        ):
            print(dict(row))
        print(r.render())
    finally:
        c.destroy()


asyncio.run(main())
