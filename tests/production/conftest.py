"""A production-shaped stack for the test session: a Postgres that requires TLS and passwords,
certificates made here, and a PgBouncer in transaction mode in front of it (TLS on both sides)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from app.store.database import create_engine, migrate
from tests.pg_cluster import PostgresCluster, ServerTls, start_cluster
from tests.pgbouncer import PgBouncer, start_pgbouncer
from tests.tls_certs import CertificateAuthority, KeyPair

APP_USER = "app"
# URL-special characters on purpose: the URL must be percent-encoded, and no log may show it.
APP_PASSWORD = "Pw-n0t/in@logs:%?&=x"
CERT_USER = "certuser"
DATABASE = "chatkit_prod"
# pg_hba.conf: TLS with a password (or a client certificate) over TCP, nothing in plain text.
HBA = [
    "local all all trust",
    f"hostssl all {CERT_USER} 127.0.0.0/8 cert",
    "hostssl all all 127.0.0.0/8 scram-sha-256",
    "host all all 127.0.0.0/8 reject",
]


@dataclass
class TlsPostgres:
    """The TLS cluster, its CA, a CA that did not sign it, and a client certificate."""

    cluster: PostgresCluster
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    client: KeyPair

    @property
    def port(self) -> int:
        return self.cluster.port

    def url(
        self,
        query: str = "sslmode=require",
        *,
        host: str = "localhost",
        port: int | None = None,
        database: str = DATABASE,
        scheme: str = "postgresql",
    ) -> str:
        """A libpq-style URL as a host hands it out (user and password of the app role)."""
        auth = f"{APP_USER}:{quote(APP_PASSWORD, safe='')}"
        suffix = f"?{query}" if query else ""
        return f"{scheme}://{auth}@{host}:{port or self.port}/{database}{suffix}"

    async def create_database(self, name: str) -> None:
        admin = await asyncpg.connect(self.cluster.socket_dsn())
        try:
            await admin.execute(f'CREATE DATABASE "{name}" OWNER {APP_USER}')
        finally:
            await admin.close()


def own_cluster(**options: Any) -> PostgresCluster:
    """A cluster of these tests' own (TLS, pg_hba, late start): needs the server binaries even
    when TEST_DATABASE_URL names the suite's database, so without them the tests are skipped."""
    try:
        return start_cluster(**options)
    except RuntimeError as exc:
        if os.environ.get("TEST_DATABASE_URL") and "binaries" in str(exc):
            pytest.skip(str(exc))
        raise


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, ...]:
    directory = tmp_path_factory.mktemp("certs")
    return (
        CertificateAuthority("test-ca", directory),
        CertificateAuthority("other-ca", directory),
    )


@pytest.fixture(scope="session")
async def tls_postgres(
    certificates: tuple[CertificateAuthority, ...],
) -> AsyncIterator[TlsPostgres]:
    """A cluster with ssl=on that refuses plain TCP; the app role owns a migrated database."""
    ca, other_ca = certificates
    server = ca.server("postgres", dns=("localhost",), ips=("127.0.0.1",))
    cluster = own_cluster(
        tls=ServerTls(cert=server.cert, key=server.key, client_ca=ca.cert_path),
        hba=HBA,
        # 127.0.0.2 is not in the certificate: for the host name check.
        listen_addresses=["127.0.0.1", "127.0.0.2"],
    )
    try:
        admin = await asyncpg.connect(cluster.socket_dsn())
        try:
            await admin.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
            await admin.execute(f"CREATE ROLE {CERT_USER} LOGIN")
            await admin.execute(f'CREATE DATABASE "{DATABASE}" OWNER {APP_USER}')
        finally:
            await admin.close()
        stack = TlsPostgres(
            cluster=cluster, ca=ca, other_ca=other_ca, client=ca.client("client", CERT_USER)
        )
        engine = create_engine(stack.url(f"sslmode=verify-full&sslrootcert={ca.cert_path}"))
        try:
            await migrate(engine)
        finally:
            await engine.dispose()
        yield stack
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pgbouncer(tls_postgres: TlsPostgres) -> Iterator[PgBouncer]:
    """PgBouncer, pool_mode = transaction, TLS to clients and (verified) to the server."""
    front = tls_postgres.ca.server("pgbouncer", dns=("localhost",), ips=("127.0.0.1",))
    bouncer = start_pgbouncer(
        server_port=tls_postgres.port,
        users={APP_USER: APP_PASSWORD},
        client_tls=front,
        server_ca=tls_postgres.ca.cert_path,
        pool_size=4,
    )
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="session")
def neon_pooled_url(tls_postgres: TlsPostgres, pgbouncer: PgBouncer) -> str:
    """Neon's pooled connection string shape, pointing at the PgBouncer."""
    return tls_postgres.url("sslmode=require&channel_binding=require", port=pgbouncer.port)


@pytest.fixture(scope="session")
def neon_direct_url(tls_postgres: TlsPostgres) -> str:
    """Neon's direct connection string shape, pointing at Postgres itself."""
    return tls_postgres.url("sslmode=require&channel_binding=require")


def assert_no_password(text: str) -> None:
    """Neither the password nor its URL-encoded form appears."""
    assert APP_PASSWORD not in text
    assert quote(APP_PASSWORD, safe="") not in text
