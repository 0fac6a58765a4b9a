"""DATABASE_URL parsing: libpq's URL shapes and parameters mapped to asyncpg, errors that name
the parameter and never show the password. (Startup refusing a bad URL, a process of its own:
tests/production/test_database_url_startup.py.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from app.settings import SettingsError, load_settings
from app.store.database import create_engine
from app.store.database_url import (
    CHANNEL_BINDING_NOTE,
    DatabaseUrlError,
    normalize_database_url,
    parse_database_url,
)
from tests.tls_certs import CertificateAuthority

SECRET = "s3cr3t-Pa55"
BASE = f"postgresql://app:{SECRET}@db.example.com:6543/chat"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority("url-ca", tmp_path_factory.mktemp("url-certs"))


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg", "POSTGRES"])
def test_every_postgres_scheme_uses_asyncpg(scheme: str) -> None:
    parsed = parse_database_url(f"{scheme}://app:{SECRET}@db.example.com/chat")
    assert parsed.url.drivername == "postgresql+asyncpg"
    assert parsed.url.password == SECRET and parsed.url.host == "db.example.com"
    assert parsed.connect_args == {} and parsed.is_postgres
    assert parsed.target == "db.example.com:5432/chat"
    assert normalize_database_url(f"{scheme}://u@h/d").startswith("postgresql+asyncpg://u@h/d")


def test_percent_encoded_password_is_decoded() -> None:
    parsed = parse_database_url("postgres://app:p%40ss%2Fw%3Ard@h/db")
    assert parsed.url.password == "p@ss/w:rd"


def test_sqlite_passes_through() -> None:
    parsed = parse_database_url("sqlite+aiosqlite:///.data/chat.db")
    assert not parsed.is_postgres and parsed.url.database == ".data/chat.db"
    with pytest.raises(DatabaseUrlError, match="timeout"):
        parse_database_url("sqlite+aiosqlite:///x.db?timeout=3")


def test_sslmode_disable_allow_prefer() -> None:
    assert parse_database_url(f"{BASE}?sslmode=disable").connect_args == {"ssl": False}
    # asyncpg's own negotiation with fallback, as libpq does; nothing is verified then.
    assert parse_database_url(f"{BASE}?sslmode=allow").connect_args == {"ssl": "allow"}
    assert parse_database_url(f"{BASE}?sslmode=prefer").connect_args == {"ssl": "prefer"}


def test_sslmode_require_encrypts_and_verifies_only_with_a_ca(ca: CertificateAuthority) -> None:
    plain = parse_database_url(f"{BASE}?sslmode=require").connect_args["ssl"]
    assert isinstance(plain, ssl.SSLContext)
    assert plain.verify_mode == ssl.CERT_NONE and not plain.check_hostname
    chained = parse_database_url(f"{BASE}?sslmode=require&sslrootcert={ca.cert_path}")
    context = chained.connect_args["ssl"]
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname


def test_verify_ca_and_verify_full(ca: CertificateAuthority) -> None:
    verify_ca = parse_database_url(f"{BASE}?sslmode=verify-ca&sslrootcert={ca.cert_path}")
    context = verify_ca.connect_args["ssl"]
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    full = parse_database_url(f"{BASE}?sslmode=verify-full&sslrootcert={ca.cert_path}")
    context = full.connect_args["ssl"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(cert["subject"] == ((("commonName", "url-ca"),),) for cert in context.get_ca_certs())


def test_sslrootcert_system_means_verify_full() -> None:
    context = parse_database_url(f"{BASE}?sslrootcert=system").connect_args["ssl"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(DatabaseUrlError, match="sslrootcert=system needs sslmode=verify-full"):
        parse_database_url(f"{BASE}?sslmode=require&sslrootcert=system")


def test_client_certificate(ca: CertificateAuthority) -> None:
    client = ca.client("url-client", "app")
    query = f"sslmode=require&sslcert={client.cert}&sslkey={client.key}"
    assert isinstance(parse_database_url(f"{BASE}?{query}").connect_args["ssl"], ssl.SSLContext)
    with pytest.raises(DatabaseUrlError, match="sslkey is given without sslcert"):
        parse_database_url(f"{BASE}?sslmode=require&sslkey={client.key}")
    with pytest.raises(DatabaseUrlError, match="sslcert needs sslmode=require"):
        parse_database_url(f"{BASE}?sslmode=prefer&sslcert={client.cert}")


def test_neon_shape_requires_tls_and_notes_channel_binding() -> None:
    parsed = parse_database_url(f"{BASE}?sslmode=require&channel_binding=require")
    assert isinstance(parsed.connect_args["ssl"], ssl.SSLContext)
    assert parsed.notes == (CHANNEL_BINDING_NOTE,)
    # channel_binding=require needs TLS, whatever sslmode says (as with libpq).
    upgraded = parse_database_url(f"{BASE}?sslmode=prefer&channel_binding=require")
    assert isinstance(upgraded.connect_args["ssl"], ssl.SSLContext)
    with pytest.raises(DatabaseUrlError, match="channel_binding=require needs TLS"):
        parse_database_url(f"{BASE}?sslmode=disable&channel_binding=require")
    for mode in ("prefer", "disable"):
        quiet = parse_database_url(f"{BASE}?channel_binding={mode}")
        assert quiet.notes == () and quiet.connect_args == {}


def test_options_application_name_connect_timeout() -> None:
    parsed = parse_database_url(
        f"{BASE}?options=-c%20search_path%3Dapp%20-c%20statement_timeout%3D5s"
        "&application_name=chatkit&connect_timeout=7"
    )
    assert parsed.connect_args == {
        "server_settings": {
            "options": "-c search_path=app -c statement_timeout=5s",
            "application_name": "chatkit",
        },
        "timeout": 7.0,
    }
    assert "timeout" not in parse_database_url(f"{BASE}?connect_timeout=0").connect_args
    with pytest.raises(DatabaseUrlError, match="connect_timeout='soon'"):
        parse_database_url(f"{BASE}?connect_timeout=soon")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"{BASE}?sslmode=sometimes", "sslmode='sometimes'"),
        (f"{BASE}?channel_binding=maybe", "channel_binding='maybe'"),
        (f"{BASE}?target_session_attrs=any", "'target_session_attrs'"),
        (f"{BASE}?password={SECRET}", "'password'"),
        (f"{BASE}?sslmode=require&sslmode=disable", "'sslmode' is given more than once"),
        (f"{BASE}?sslmode=verify-ca", "sslrootcert"),
        (f"{BASE}?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt", "sslrootcert"),
        (f"mysql://app:{SECRET}@h/db", "'mysql'"),
        (f"postgresql://app:{SECRET}@h:notaport/db", "not a valid URL"),
        (f"app:{SECRET}@h/db", "not a URL"),
    ],
)
def test_errors_name_the_problem_and_never_the_password(url: str, named: str) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        parse_database_url(url)
    assert named in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(SettingsError) as settings_error:
        load_settings(database_url=url)
    assert "DATABASE_URL" in str(settings_error.value)
    assert SECRET not in str(settings_error.value)


def test_migration_url_is_checked_too() -> None:
    with pytest.raises(SettingsError, match="DATABASE_MIGRATION_URL") as caught:
        load_settings(database_migration_url=f"{BASE}?bogus=1")
    assert SECRET not in str(caught.value)
    assert load_settings(database_migration_url=" ").database_migration_url is None


def test_engines_hide_statement_parameters(tmp_path: Path) -> None:
    """Statement parameters (users' messages) never appear in exception text."""
    sqlite = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    postgres = create_engine(f"{BASE}?sslmode=disable", pooler="transaction")
    assert sqlite.sync_engine.hide_parameters and postgres.sync_engine.hide_parameters
    context = postgres.sync_engine.dialect.create_connect_args(postgres.url)[1]
    assert context["password"] == SECRET  # still given to the driver, only not printed
