"""`python -m app.todo_mcp`: Settings from the environment, migrations first, then serving."""

from __future__ import annotations

import secrets
from pathlib import Path

from app.auth.shared_secret import SharedSecretVerifier
from app.tools import McpConnector
from tests.todo_mcp.conftest import new_user
from tests.todo_mcp.live_server import run_standalone
from tests.todo_mcp.mcp_calls import call, structured


async def test_standalone_server_migrates_and_serves(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(48)
    env = {
        # A fresh SQLite file: only AUTO_MIGRATE can have created the table.
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'standalone.db'}",
        "AUTO_MIGRATE": "true",
        "AUTH_JWT_SECRET": secret,
        "DATA_DIR": str(tmp_path / "data"),
    }
    verifier = SharedSecretVerifier(secret)
    with run_standalone(env=env, log_path=tmp_path / "server.log") as server:
        connector = McpConnector(server.mcp_url, 10)
        try:
            user = new_user()
            async with connector.server_for(verifier.mint(user)) as mcp:
                added = structured(await call(mcp, "add_task", title="standalone"))
                listed = structured(await call(mcp, "list_tasks"))
            assert listed["tasks"] == [added]
            async with connector.server_for(verifier.mint(new_user())) as other:
                assert structured(await call(other, "list_tasks"))["tasks"] == []
        finally:
            await connector.aclose()
        assert server.process.poll() is None
    assert server.process.returncode is not None
