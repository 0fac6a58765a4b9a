"""A throwaway PostgreSQL cluster for the test session, started from the machine's binaries."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "postgres"


def _find_bindir() -> Path:
    configured = os.environ.get("PG_BINDIR")
    candidates = [configured] if configured else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the `postgresql` "
        "package or set TEST_DATABASE_URL to an existing database"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    """A cluster in a temporary directory, owned by an unprivileged user when run as root."""

    bindir: Path
    root: Path
    port: int
    as_user: str | None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.datadir.mkdir()
        if self.as_user:
            entry = pwd.getpwnam(self.as_user)
            for path in (self.root, self.datadir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PostgresCluster:
    """Create and start a cluster on a free loopback port."""
    as_user = SERVICE_USER if os.geteuid() == 0 else None
    if as_user:
        try:
            pwd.getpwnam(as_user)
        except KeyError as exc:
            raise RuntimeError(
                "running as root needs the unprivileged `postgres` user for the test cluster"
            ) from exc
    root = Path(tempfile.mkdtemp(prefix="chatkit-pg-"))
    cluster = PostgresCluster(bindir=_find_bindir(), root=root, port=free_port(), as_user=as_user)
    try:
        cluster.init()
        cluster.start()
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster
