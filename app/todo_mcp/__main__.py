"""Run the TODO MCP server on its own: `python -m app.todo_mcp --host 127.0.0.1 --port 3000`."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette

from app.auth.base import TokenVerifier
from app.settings import Settings, SettingsError, load_settings
from app.store.database import create_engine, prepare_database
from app.todo_mcp.server import build_todo_mcp

DEFAULT_PORT = 3000


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.todo_mcp", description=__doc__)
    parser.add_argument("--host", help="interface to bind (default: HOST setting)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 3000)")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="another Host header value to accept (repeatable); the host of MCP_SERVER_URL is "
        "accepted too",
    )
    return parser.parse_args(argv)


def _public_hosts(settings: Settings, extra: list[str]) -> list[str]:
    hosts = list(extra)
    if settings.mcp_server_url:
        netloc = urlsplit(settings.mcp_server_url).netloc.rpartition("@")[2]
        if netloc:
            hosts.append(netloc)
    return hosts


def build_app(
    settings: Settings, *, verifier: TokenVerifier, port: int, allow_hosts: list[str]
) -> Starlette:
    """The standalone ASGI app: the MCP endpoint at /mcp, migrations first when AUTO_MIGRATE."""
    engine = create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        pooler=settings.database_pooler,
    )
    todo = build_todo_mcp(
        verifier=verifier,
        engine=engine,
        public_url_hosts=_public_hosts(settings, allow_hosts),
        port=port,
        issuer_url=settings.auth_issuer,
        calls_per_window=settings.todo_mcp_calls_per_minute,
        stream_idle_seconds=settings.todo_mcp_stream_idle_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            await prepare_database(engine, settings)  # waits for it, then AUTO_MIGRATE
            async with todo.running():
                yield
        finally:
            await verifier.aclose()
            await engine.dispose()

    return Starlette(routes=[todo.route], lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, read Settings, serve with uvicorn until interrupted."""
    args = _parse_args(argv)
    try:
        settings = load_settings()
        # Imported here: the auth factory is optional for importing this package.
        from app.auth.factory import build_verifier

        verifier = build_verifier(settings)
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    host = args.host or settings.host
    app = build_app(settings, verifier=verifier, port=args.port, allow_hosts=args.allow_host)
    uvicorn.run(app, host=host, port=args.port, log_level=settings.log_level.lower())


if __name__ == "__main__":
    main()
