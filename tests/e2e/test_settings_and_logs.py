"""Startup validation, CORS and log hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import app.__main__ as app_main
from app.settings import SettingsError, load_settings
from tests.e2e.harness import REPO_ROOT, ServerProcess
from tests.server_fixtures import ClientFactory

INVALID_SETTINGS = [
    ({"PORT": "not-a-port"}, "PORT"),
    ({"OPENAI_API": "soap"}, "OPENAI_API"),
    ({"AUTH_JWT_SECRET": "short"}, "AUTH_JWT_SECRET"),
    ({"AUTH_ALGORITHMS": "HS256"}, "AUTH_ALGORITHMS"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"HISTORY_LIMIT": "0"}, "HISTORY_LIMIT"),
]
# Settings a test process may carry that `python -m app` must not see here.
NOT_INHERITED = ("AUTH_", "OPENAI_")


class StartupContinued(Exception):
    """main() went past reading the settings: it would have started a server."""


@pytest.mark.parametrize(("env", "named"), INVALID_SETTINGS)
def test_invalid_settings_stop_startup_naming_the_setting(
    env: dict[str, str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `python -m app`'s entry, in this process; the subprocess test below runs one case whole.
    for name in os.environ:
        if name.startswith(NOT_INHERITED):
            monkeypatch.delenv(name)
    for name, value in {"DATA_DIR": str(tmp_path), **env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(REPO_ROOT)  # where `python -m app` would look for a .env file

    def went_on(**_: object) -> None:
        raise StartupContinued(f"{named}={env[named]!r} did not stop startup")

    # The first step after the settings: reaching it would mean starting a server.
    monkeypatch.setattr(app_main, "configure_logging", went_on)

    assert app_main.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("Invalid settings: ")
    assert f"{named}: " in err
    assert "Traceback" not in err


def test_invalid_setting_exits_python_m_app_with_2(tmp_path: Path) -> None:
    """The process boundary: `python -m app` itself exits with 2 and names the setting."""
    env, named = INVALID_SETTINGS[0]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO_ROOT,
        env={**clean, "DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Invalid settings: ")
    assert f"{named}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_auth_modes_are_exclusive() -> None:
    with pytest.raises(SettingsError, match="AUTH_JWKS_URL"):
        load_settings(auth_jwks_url="https://auth.example/jwks", auth_jwt_secret="x" * 40)


@pytest.fixture(scope="module")
def process_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A whole `python -m app` process: its entire output is what the log test reads."""
    server = ServerProcess(env=server_env, log_path=tmp_path_factory.mktemp("logs") / "s.log")
    server.start()
    yield server
    server.stop()


async def test_json_logs_carry_ids_and_never_tokens_or_text(
    process_server: ServerProcess, make_client: ClientFactory
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    client = make_client(process_server.base_url, user_id)
    secret_text = f"my secret plan {uuid.uuid4().hex}"
    await client.send(secret_text)
    lines = process_server.logs().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(
        {"time", "level", "logger", "event", "request_id", "user_id"} <= set(r) for r in records
    )
    mine = [r for r in records if r["user_id"] == user_id]
    assert any(r["event"] == "chatkit.request" for r in mine)
    assert len({r["request_id"] for r in mine}) >= 1 and all(r["request_id"] != "-" for r in mine)
    log_text = process_server.logs()
    assert client.token not in log_text
    assert secret_text.split()[-1] not in log_text
    started = [r for r in records if r["event"] == "server.started"]
    assert started and started[0]["model_provider"] == "offline"
