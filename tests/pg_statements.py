"""Which statements each database role sent, read from a test cluster's own log.

A cluster of the test's own logs with the role name on every line (`log_line_prefix`), and the
roles to watch log every statement (`ALTER ROLE ... SET log_statement = 'all'`). Pings, BEGIN,
COMMIT and ROLLBACK are statements like any other here: it is what the server saw.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import defaultdict

import asyncpg

from tests.pg_cluster import PostgresCluster

_PREFIX = "@@%u@@ "
_STATEMENT_LINE = re.compile(rb"^@@(\w+)@@ LOG:  (?:statement|execute [^:]*): (.*)$")
MARKER_ROLE = "statement_marker"


async def log_statements(admin: asyncpg.Connection, *roles: str) -> None:
    """Prefix log lines with the role, and log every statement of `roles` (created if needed)."""
    await admin.execute(f"ALTER SYSTEM SET log_line_prefix = '{_PREFIX}'")
    await admin.execute("SELECT pg_reload_conf()")
    for role in (*roles, MARKER_ROLE):
        exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if not exists:
            await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
        await admin.execute(f"ALTER ROLE {role} SET log_statement = 'all'")


class StatementLog:
    """The statements per role between two calls of `take()` (a marker query ends a window)."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self._cluster = cluster
        self._path = cluster.root / "server.log"
        self._offset = self._path.stat().st_size
        self._marker: asyncpg.Connection | None = None

    async def take(self) -> dict[str, list[str]]:
        """Role -> the statements it sent since the last call, oldest first."""
        if self._marker is None:
            dsn = self._cluster.socket_dsn().replace("postgres@", f"{MARKER_ROLE}@")
            self._marker = await asyncpg.connect(dsn)
        tag = f"statement-marker-{uuid.uuid4().hex}".encode()
        await self._marker.execute(f"SELECT '{tag.decode()}'")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._path.open("rb") as log:
                log.seek(self._offset)
                buffer = log.read()
            found = buffer.find(tag)
            line_end = buffer.find(b"\n", found) if found >= 0 else -1
            if line_end >= 0:
                # The window ends before the marker's line; what follows it is the next one's.
                window = buffer[: buffer.rfind(b"\n", 0, found) + 1]
                self._offset += line_end + 1
                sent: dict[str, list[str]] = defaultdict(list)
                for line in window.split(b"\n"):
                    matched = _STATEMENT_LINE.match(line)
                    if matched:
                        sent[matched.group(1).decode()].append(matched.group(2).decode())
                return sent
            await asyncio.sleep(0.01)
        raise RuntimeError("the marker query never reached the Postgres log")

    async def aclose(self) -> None:
        if self._marker is not None:
            await self._marker.close()
            self._marker = None


def verbs(statements: list[str]) -> list[str]:
    """The first word of each statement: INSERT, SELECT, BEGIN, ..."""
    return [
        statement.split()[0].rstrip(";").upper() if statement.split() else ""
        for statement in statements
    ]
