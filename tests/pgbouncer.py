"""A real PgBouncer (Debian's `pgbouncer` package) in transaction mode, for the test session."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pg_cluster import SERVICE_USER, free_port
from tests.processes import terminate
from tests.tls_certs import KeyPair


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise RuntimeError(
            "pgbouncer not found: install the `pgbouncer` package (scripts/ensure-test-deps.sh "
            "does it when run as root)"
        )
    return found


@dataclass
class PgBouncer:
    """A running PgBouncer on a loopback port."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        terminate(self.process, 10)
        shutil.rmtree(self.root, ignore_errors=True)


def _owned(path: Path, content: str, as_user: str | None) -> None:
    path.write_text(content)
    path.chmod(0o600)
    if as_user:
        entry = pwd.getpwnam(as_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def start_pgbouncer(
    *,
    server_port: int,
    users: dict[str, str],
    server_host: str = "127.0.0.1",
    client_tls: KeyPair | None = None,
    server_ca: Path | None = None,
    pool_size: int = 4,
) -> PgBouncer:
    """PgBouncer with `pool_mode = transaction` in front of `server_host:server_port`.

    Clients log in with SCRAM as one of `users` (name -> password; PgBouncer uses the same
    password towards the server). With `client_tls`, clients must use TLS; with `server_ca`,
    PgBouncer talks TLS to the server and checks its certificate and host name (verify-full).
    Like the Postgres binaries, PgBouncer will not run as root: it runs as `postgres` then.
    """
    as_user = SERVICE_USER if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="chatkit-pgbouncer-"))
    if as_user:
        entry = pwd.getpwnam(as_user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port()
    userlist = "".join(f'"{name}" "{password}"\n' for name, password in users.items())
    _owned(root / "userlist.txt", userlist, as_user)
    lines = [
        "[databases]",
        f"* = host={server_host} port={server_port}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = scram-sha-256",
        f"auth_file = {root / 'userlist.txt'}",
        "pool_mode = transaction",
        f"default_pool_size = {pool_size}",
        "max_client_conn = 1000",
        f"logfile = {root / 'pgbouncer.log'}",
        # asyncpg sends none of these, other clients do; ignoring them is the common setup.
        "ignore_startup_parameters = extra_float_digits",
    ]
    if client_tls is not None:
        _owned(root / "client.crt", client_tls.cert.read_text(), as_user)
        _owned(root / "client.key", client_tls.key.read_text(), as_user)
        lines += [
            "client_tls_sslmode = require",
            f"client_tls_cert_file = {root / 'client.crt'}",
            f"client_tls_key_file = {root / 'client.key'}",
        ]
    if server_ca is not None:
        _owned(root / "server-ca.crt", server_ca.read_text(), as_user)
        lines += [
            "server_tls_sslmode = verify-full",
            f"server_tls_ca_file = {root / 'server-ca.crt'}",
        ]
    _owned(root / "pgbouncer.ini", "\n".join(lines) + "\n", as_user)

    log = (root / "stdout.log").open("ab")
    process = subprocess.Popen(
        [find_pgbouncer(), str(root / "pgbouncer.ini")],
        stdout=log,
        stderr=log,
        user=as_user,
        group=as_user,
        extra_groups=[] if as_user else None,
        cwd=root,
    )
    bouncer = PgBouncer(root=root, port=port, process=process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (root / "stdout.log").read_text() + bouncer.log
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"pgbouncer exited early:\n{output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return bouncer
        except OSError:
            time.sleep(0.05)
    bouncer.stop()
    raise RuntimeError("pgbouncer did not start listening")
