"""DATA_DIR holds the default SQLite database too (issue 9, item 12)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx2
import pytest

from app.settings import Settings
from tests.e2e.harness import InProcessServer, text_input


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATA_DIR", raising=False)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_default_database_is_inside_data_dir(tmp_path: Path) -> None:
    assert settings(data_dir=tmp_path).database_url == f"sqlite+aiosqlite:///{tmp_path}/chat.db"
    assert settings().database_url == "sqlite+aiosqlite:///.data/chat.db"


def test_data_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "state"))
    assert settings().database_url == f"sqlite+aiosqlite:///{tmp_path}/state/chat.db"
    monkeypatch.setenv("DATABASE_URL", "")  # set but empty: the default too
    assert settings().database_url == f"sqlite+aiosqlite:///{tmp_path}/state/chat.db"


def test_an_explicit_database_url_wins(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/elsewhere.db"
    assert settings(data_dir=tmp_path, database_url=url).database_url == url


async def test_server_keeps_its_database_in_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    secret = secrets.token_urlsafe(48)
    server = InProcessServer(
        env={"DATA_DIR": str(data_dir), "AUTH_JWT_SECRET": secret},
        log_path=tmp_path / "server.log",
    )
    server.start()
    try:
        from app.auth.shared_secret import SharedSecretVerifier

        token = SharedSecretVerifier(secret).mint("someone")
        async with httpx2.AsyncClient(base_url=server.base_url, timeout=60) as http:
            response = await http.post(
                "/api/chatkit",
                json={"type": "threads.create", "params": {"input": text_input("hello")}},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 200
    finally:
        server.stop()
    assert (data_dir / "chat.db").stat().st_size > 0
