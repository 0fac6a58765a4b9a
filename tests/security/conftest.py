"""The security tests reuse the end-to-end fixtures: Postgres, the token minter, the servers."""

from __future__ import annotations

from tests.e2e.conftest import make_client, minter, offline_server, server_env

__all__ = ["make_client", "minter", "offline_server", "server_env"]
