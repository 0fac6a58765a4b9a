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
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class ServerTls:
    """TLS for the cluster (`ssl=on`): its certificate and key, and a CA for client certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass
class PostgresCluster:
    """A cluster in a temporary directory, owned by an unprivileged user when run as root."""

    bindir: Path
    root: Path
    port: int
    as_user: str | None
    # Optional: TLS, pg_hba.conf lines replacing initdb's (trust), more listen addresses.
    tls: ServerTls | None = None
    hba: list[str] | None = None
    listen_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def socket_dsn(self, database: str = "postgres") -> str:
        """A libpq DSN over the Unix socket (for asyncpg.connect): works whatever pg_hba says
        about TCP, since the `local` line stays `trust`."""
        return f"postgresql://postgres@/{database}?host={self.root}&port={self.port}"

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
        if self.hba is not None:
            self._write_owned(self.datadir / "pg_hba.conf", "\n".join(self.hba) + "\n")
        if self.tls is not None:
            # The server refuses a key others can read; the files must belong to its user.
            self._write_owned(self.root / "server.crt", self.tls.cert.read_text())
            self._write_owned(self.root / "server.key", self.tls.key.read_text())
            if self.tls.client_ca is not None:
                self._write_owned(self.root / "client-ca.crt", self.tls.client_ca.read_text())

    def _write_owned(self, path: Path, content: str) -> None:
        path.write_text(content)
        path.chmod(0o600)
        if self.as_user:
            entry = pwd.getpwnam(self.as_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} "
            f"-c listen_addresses={','.join(self.listen_addresses)} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        if self.tls is not None:
            options += (
                f" -c ssl=on -c ssl_cert_file={self.root / 'server.crt'}"
                f" -c ssl_key_file={self.root / 'server.key'}"
            )
            if self.tls.client_ca is not None:
                options += f" -c ssl_ca_file={self.root / 'client-ca.crt'}"
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


def start_cluster(
    *,
    tls: ServerTls | None = None,
    hba: list[str] | None = None,
    listen_addresses: list[str] | None = None,
    port: int | None = None,
    start: bool = True,
) -> PostgresCluster:
    """Create and start a cluster on a free loopback port (by default: trust, no TLS).

    `hba` replaces pg_hba.conf (keep a `local ... trust` line for `socket_dsn`); `start=False`
    only initialises it, for a test that starts it later."""
    as_user = SERVICE_USER if os.geteuid() == 0 else None
    if as_user:
        try:
            pwd.getpwnam(as_user)
        except KeyError as exc:
            raise RuntimeError(
                "running as root needs the unprivileged `postgres` user for the test cluster"
            ) from exc
    root = Path(tempfile.mkdtemp(prefix="chatkit-pg-"))
    cluster = PostgresCluster(
        bindir=_find_bindir(),
        root=root,
        port=port or free_port(),
        as_user=as_user,
        tls=tls,
        hba=hba,
        listen_addresses=listen_addresses or ["127.0.0.1"],
    )
    try:
        cluster.init()
        if start:
            cluster.start()
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster
