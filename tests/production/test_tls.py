"""DATABASE_URL with libpq's TLS parameters against a real Postgres that requires TLS."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy import text

from app.store.database import DatabaseUnreachable, create_engine, wait_for_database
from tests.e2e.harness import REPO_ROOT, ServerProcess
from tests.production.conftest import APP_PASSWORD, CERT_USER, TlsPostgres, assert_no_password
from tests.server_fixtures import ClientFactory


async def _session_facts(url: str) -> dict[str, object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT s.ssl, current_user AS user, "
                        "current_setting('application_name') AS application_name, "
                        "current_setting('statement_timeout') AS statement_timeout "
                        "FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
                    )
                )
            ).one()
            return dict(row._mapping)
    finally:
        await engine.dispose()


async def _connect_error(url: str) -> BaseException:
    engine = create_engine(url)
    try:
        with pytest.raises(sqlalchemy.exc.SQLAlchemyError) as caught:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        return caught.value
    finally:
        await engine.dispose()


def _chain(exc: BaseException) -> list[BaseException]:
    found = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    return found


async def test_sslmode_require_encrypts_without_a_ca(tls_postgres: TlsPostgres) -> None:
    facts = await _session_facts(tls_postgres.url("sslmode=require"))
    assert facts["ssl"] is True
    assert facts["user"] == "app"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_verify_full_with_sslrootcert(tls_postgres: TlsPostgres, host: str) -> None:
    query = f"sslmode=verify-full&sslrootcert={tls_postgres.ca.cert_path}"
    facts = await _session_facts(tls_postgres.url(query, host=host))
    assert facts["ssl"] is True


async def test_verify_full_checks_the_host_name(tls_postgres: TlsPostgres) -> None:
    # 127.0.0.2 reaches the same server, but the certificate names localhost and 127.0.0.1.
    ca = tls_postgres.ca.cert_path
    full = await _connect_error(
        tls_postgres.url(f"sslmode=verify-full&sslrootcert={ca}", host="127.0.0.2")
    )
    refused = [e for e in _chain(full) if isinstance(e, ssl.SSLCertVerificationError)]
    assert refused and "127.0.0.2" in str(refused[0])  # "IP address mismatch ... '127.0.0.2'"
    # verify-ca checks the chain only, so the same address is accepted.
    facts = await _session_facts(
        tls_postgres.url(f"sslmode=verify-ca&sslrootcert={ca}", host="127.0.0.2")
    )
    assert facts["ssl"] is True


async def test_a_wrong_root_certificate_is_refused_clearly(tls_postgres: TlsPostgres) -> None:
    url = tls_postgres.url(f"sslmode=verify-full&sslrootcert={tls_postgres.other_ca.cert_path}")
    error = await _connect_error(url)
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(error))
    # At startup this is not worth waiting for: one line saying why, at once.
    engine = create_engine(url)
    try:
        with pytest.raises(DatabaseUnreachable) as caught:
            await wait_for_database(engine, 30)
    finally:
        await engine.dispose()
    message = str(caught.value)
    assert "certificate verify failed" in message
    assert f"localhost:{tls_postgres.port}/chatkit_prod" in message
    assert "\n" not in message
    assert_no_password(message)


async def test_sslmode_disable_is_refused_by_a_server_that_requires_tls(
    tls_postgres: TlsPostgres,
) -> None:
    error = await _connect_error(tls_postgres.url("sslmode=disable"))
    refused = [
        e for e in _chain(error) if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError)
    ]
    assert refused, _chain(error)
    assert "no encryption" in str(refused[0])
    assert_no_password(str(error))


async def test_a_client_certificate_logs_in_without_a_password(tls_postgres: TlsPostgres) -> None:
    ca, client = tls_postgres.ca.cert_path, tls_postgres.client
    url = (
        f"postgres://{CERT_USER}@localhost:{tls_postgres.port}/chatkit_prod?sslmode=verify-full"
        f"&sslrootcert={ca}&sslcert={client.cert}&sslkey={client.key}"
    )
    facts = await _session_facts(url)
    assert facts["user"] == CERT_USER and facts["ssl"] is True
    without = url.split("&sslcert=", 1)[0]
    error = await _connect_error(without)
    assert any(isinstance(e, asyncpg.InvalidAuthorizationSpecificationError) for e in _chain(error))


async def test_options_and_application_name_reach_the_server(tls_postgres: TlsPostgres) -> None:
    query = (
        "sslmode=require&application_name=chatkit-test"
        "&options=-c%20statement_timeout%3D4321&connect_timeout=7"
    )
    facts = await _session_facts(tls_postgres.url(query, scheme="postgres"))
    assert facts["application_name"] == "chatkit-test"
    assert facts["statement_timeout"] == "4321ms"


def test_alembic_upgrade_takes_a_libpq_url(tls_postgres: TlsPostgres, tmp_path: Path) -> None:
    import asyncio

    asyncio.run(tls_postgres.create_database("alembic_cli"))
    url = tls_postgres.url(
        f"sslmode=verify-full&sslrootcert={tls_postgres.ca.cert_path}",
        database="alembic_cli",
        scheme="postgres",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "AUTH_"))}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env={**env, "DATABASE_URL": url, "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert_no_password(result.stdout + result.stderr)
    current = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        cwd=REPO_ROOT,
        env={**env, "DATABASE_URL": url, "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "(head)" in current.stdout, current.stdout + current.stderr


async def test_neon_shaped_url_serves_end_to_end(
    tls_postgres: TlsPostgres,
    neon_direct_url: str,
    server_env: dict[str, str],
    make_client: ClientFactory,
    tmp_path: Path,
) -> None:
    import httpx2

    await tls_postgres.create_database("neon_e2e")
    url = neon_direct_url.replace("/chatkit_prod?", "/neon_e2e?")
    server = ServerProcess(
        env={**server_env, "DATABASE_URL": url, "AUTO_MIGRATE": "true"},
        log_path=tmp_path / "neon.log",
    )
    server.start()
    try:
        async with httpx2.AsyncClient(base_url=server.base_url) as http:
            ready = await http.get("/ready")
        assert ready.status_code == 200, ready.text
        client = make_client(server.base_url)
        added = await client.send("add task buy milk")
        assert added.status == 200
        assert "Added task" in added.assistant_text() and "buy milk" in added.assistant_text()
        listed = await client.send("list tasks", added.thread_id)
        assert "buy milk" in listed.assistant_text()
    finally:
        server.stop()
    logs = server.logs()
    assert "channel_binding" in logs  # the limit is said once, at startup
    assert_no_password(logs)
    assert APP_PASSWORD not in logs
