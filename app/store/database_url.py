"""DATABASE_URL as hosts hand it out (libpq style) turned into what SQLAlchemy and asyncpg take.

Hosts give URLs written for libpq: `postgres://` or `postgresql://` with query parameters such as
`sslmode=require&channel_binding=require`. SQLAlchemy hands every query parameter to
`asyncpg.connect()` as a keyword, which has different names (`ssl=`, `server_settings=`,
`timeout=`) and no `sslmode`. This module is the one place that translates; the engine, alembic
and the tests all go through it. Messages never contain the password (nor any unknown value).

libpq parameter      -> asyncpg
sslmode=disable      -> ssl=False
sslmode=allow|prefer -> ssl="allow"|"prefer" (asyncpg negotiates and falls back; no verification)
sslmode=require      -> an SSLContext; the chain is verified only when sslrootcert is given
sslmode=verify-ca    -> an SSLContext verifying the chain against sslrootcert
sslmode=verify-full  -> the same plus the host name (sslrootcert=system: the system CA store)
sslcert / sslkey     -> a client certificate in that SSLContext (require or stronger only)
channel_binding      -> disable / prefer: nothing to do; require: TLS is required and a warning is
                        logged, because asyncpg does not implement SCRAM channel binding
options              -> server_settings["options"] (the server parses `-c name=value` itself)
application_name     -> server_settings["application_name"]
connect_timeout      -> timeout (seconds; 0 keeps asyncpg's default)
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

POSTGRES_DRIVER = "postgresql+asyncpg"
SQLITE_DRIVER = "sqlite+aiosqlite"
_POSTGRES_SCHEMES = ("postgres", "postgresql", POSTGRES_DRIVER)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
CHANNEL_BINDING_MODES = ("disable", "prefer", "require")
SUPPORTED_PARAMETERS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "channel_binding",
    "options",
    "application_name",
    "connect_timeout",
)
CHANNEL_BINDING_NOTE = (
    "channel_binding=require: the asyncpg driver does not implement SCRAM channel binding; "
    "the connection requires TLS but is not bound to it. Use sslmode=verify-full to "
    "authenticate the server."
)


class DatabaseUrlError(ValueError):
    """The database URL cannot be used; the message names the part at fault, never the password."""


@dataclass(frozen=True)
class DatabaseUrl:
    """A database URL split into the driver URL and the keyword arguments of `asyncpg.connect()`."""

    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def is_postgres(self) -> bool:
        return self.url.drivername == POSTGRES_DRIVER

    @property
    def target(self) -> str:
        """Where it points, for log lines: host:port/database, no user, no password."""
        return describe_target(self.url)


def describe_target(url: URL) -> str:
    """host:port/database of a Postgres URL, or the SQLite file; never the user or password."""
    if url.drivername.startswith("sqlite"):
        return f"sqlite:{url.database or ':memory:'}"
    host = url.host or "local socket"
    return f"{host}:{url.port or 5432}/{url.database or ''}"


def _scheme(raw: str) -> tuple[str, str]:
    scheme, separator, rest = raw.strip().partition("://")
    if not separator:
        raise DatabaseUrlError(
            "not a URL: use postgresql://user:password@host:port/database "
            "or sqlite+aiosqlite:///path"
        )
    return scheme.lower(), rest


def normalize_database_url(raw: str) -> str:
    """The same URL with the scheme SQLAlchemy needs (`postgresql+asyncpg`); validates it fully."""
    parse_database_url(raw)
    scheme, rest = _scheme(raw)
    if scheme in _POSTGRES_SCHEMES:
        return f"{POSTGRES_DRIVER}://{rest}"
    return raw.strip()


def parse_database_url(raw: str) -> DatabaseUrl:
    """Parse DATABASE_URL; raise DatabaseUrlError naming an unsupported scheme or parameter."""
    scheme, rest = _scheme(raw)
    if scheme in _POSTGRES_SCHEMES:
        url = _make_url(f"{POSTGRES_DRIVER}://{rest}")
        return _postgres(url)
    if scheme == SQLITE_DRIVER:
        url = _make_url(raw.strip())
        if url.query:
            names = ", ".join(sorted(url.query))
            raise DatabaseUrlError(f"unsupported parameter for SQLite: {names}")
        return DatabaseUrl(url=url)
    raise DatabaseUrlError(
        f"unsupported scheme {scheme!r}: use postgresql:// (or postgres://, "
        "postgresql+asyncpg://) or sqlite+aiosqlite:///path"
    )


def _make_url(text: str) -> URL:
    try:
        return make_url(text)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        # SQLAlchemy's own message repeats the whole string, password included.
        raise DatabaseUrlError(
            "not a valid URL: expected postgresql://user:password@host:port/database "
            "(percent-encode special characters in the password)"
        ) from None


def _single_values(url: URL) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in url.query.items():
        if not isinstance(value, str):
            raise DatabaseUrlError(f"parameter {name!r} is given more than once")
        values[name] = value
    unknown = sorted(set(values) - set(SUPPORTED_PARAMETERS))
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        supported = ", ".join(SUPPORTED_PARAMETERS)
        raise DatabaseUrlError(f"unsupported parameter {names} (supported: {supported})")
    return values


def _postgres(url: URL) -> DatabaseUrl:
    params = _single_values(url)
    connect_args: dict[str, Any] = {}
    notes: list[str] = []
    server_settings: dict[str, str] = {}

    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise DatabaseUrlError(f"sslmode={sslmode!r} is not one of {', '.join(SSL_MODES)}")
    rootcert = params.get("sslrootcert")
    if rootcert == "system" and sslmode is None:
        sslmode = "verify-full"  # what libpq does with sslrootcert=system

    binding = params.get("channel_binding")
    if binding is not None and binding not in CHANNEL_BINDING_MODES:
        raise DatabaseUrlError(
            f"channel_binding={binding!r} is not one of {', '.join(CHANNEL_BINDING_MODES)}"
        )
    if binding == "require":
        if sslmode == "disable":
            raise DatabaseUrlError("channel_binding=require needs TLS, but sslmode=disable")
        if sslmode in (None, "allow", "prefer"):
            sslmode = "require"
        notes.append(CHANNEL_BINDING_NOTE)

    ssl_arg = _ssl_argument(
        sslmode, rootcert=rootcert, cert=params.get("sslcert"), key=params.get("sslkey")
    )
    if ssl_arg is not None:
        connect_args["ssl"] = ssl_arg

    if "options" in params:
        server_settings["options"] = params["options"]
    if "application_name" in params:
        server_settings["application_name"] = params["application_name"]
    if server_settings:
        connect_args["server_settings"] = server_settings

    if "connect_timeout" in params:
        raw_timeout = params["connect_timeout"]
        try:
            seconds = int(raw_timeout)
        except ValueError:
            raise DatabaseUrlError(
                f"connect_timeout={raw_timeout!r} is not a whole number of seconds"
            ) from None
        if seconds < 0:
            raise DatabaseUrlError("connect_timeout must not be negative")
        if seconds > 0:
            connect_args["timeout"] = float(seconds)

    return DatabaseUrl(url=url.set(query={}), connect_args=connect_args, notes=tuple(notes))


def _ssl_argument(
    sslmode: str | None, *, rootcert: str | None, cert: str | None, key: str | None
) -> ssl.SSLContext | str | bool | None:
    if key is not None and cert is None:
        raise DatabaseUrlError("sslkey is given without sslcert")
    if sslmode is None:
        if cert is not None:
            raise DatabaseUrlError("sslcert needs sslmode=require, verify-ca or verify-full")
        return None  # asyncpg's default, like libpq's: prefer (or PGSSLMODE)
    if sslmode == "disable":
        return False
    if rootcert == "system" and sslmode != "verify-full":
        raise DatabaseUrlError(f"sslrootcert=system needs sslmode=verify-full, not {sslmode}")
    if sslmode in ("allow", "prefer"):
        if cert is not None:
            raise DatabaseUrlError(
                f"sslcert needs sslmode=require, verify-ca or verify-full, not {sslmode}"
            )
        return sslmode  # asyncpg tries both ways; nothing is verified in these modes
    context = _tls_context(sslmode, rootcert)
    if cert is not None:
        try:
            context.load_cert_chain(cert, keyfile=key)
        except (OSError, ssl.SSLError) as exc:
            raise DatabaseUrlError(f"sslcert/sslkey: cannot load {cert}: {_reason(exc)}") from None
    return context


def _tls_context(sslmode: str, rootcert: str | None) -> ssl.SSLContext:
    if rootcert == "system":
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if rootcert is None and sslmode != "require":
            default = Path.home() / ".postgresql" / "root.crt"  # libpq's default location
            if not default.is_file():
                also = " (or sslrootcert=system)" if sslmode == "verify-full" else ""
                raise DatabaseUrlError(f"sslmode={sslmode} needs sslrootcert=<CA file>{also}")
            rootcert = str(default)
        if rootcert is None:  # require without a CA: encrypted, server not authenticated
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            context.load_verify_locations(cafile=rootcert)
        except (OSError, ssl.SSLError) as exc:
            raise DatabaseUrlError(f"sslrootcert: cannot load {rootcert}: {_reason(exc)}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = sslmode == "verify-full"
    return context


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
