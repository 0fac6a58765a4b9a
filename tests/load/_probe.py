import asyncio, tempfile, sys
from pathlib import Path
from tests.load.scenario import run_load
from tests.load.load_test import _create_database
from tests.pg_cluster import start_cluster


async def main():
    c = start_cluster()
    try:
        url = await _create_database(c)
        for users, turns in [(1, 4), (5, 4)]:
            r = await run_load(
                database_url=url,
                workdir=Path(tempfile.mkdtemp()),
                users=users,
                turns=turns,
                log_level="INFO",
            )
            for o in sorted(r.outcomes, key=lambda o: (o.turn, o.user_id)):
                print(
                    o.user_id[-4:],
                    o.turn,
                    round(o.seconds * 1000),
                    round((o.first_token_seconds or 0) * 1000),
                    o.error,
                )
            print(r.server_log)
    finally:
        c.destroy()


asyncio.run(main())
