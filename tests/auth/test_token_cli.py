"""`python -m app.auth.token USER`: the development token printer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth.local_secret import ensure_local_secret
from app.auth.shared_secret import SharedSecretVerifier
from app.auth.token import main
from app.errors import AuthenticationError

SECRET = "c" * 48
# Settings of the test process the command must not see.
NOT_INHERITED = ("AUTH_", "DATA_DIR", "OPENAI_", "DATABASE_")


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command as a process of its own: exit code, stdout and stderr."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(NOT_INHERITED)
    }
    clean.update({"DATA_DIR": str(tmp_path / "data"), **env})
    # cwd=tmp_path: no project `.env` is read.
    return subprocess.run(
        [sys.executable, "-m", "app.auth.token", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment for calling `main()` in-process, as `run_cli` gives the process."""
    for name in list(os.environ):
        if name.upper().startswith(NOT_INHERITED):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no project `.env` is read
    return tmp_path


def run_main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    **env: str,
) -> tuple[int, str, str]:
    """The command's `main()` in this process (with `cli_env`): exit code, stdout, stderr."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_prints_one_verifiable_token_in_shared_secret_mode(tmp_path: Path) -> None:
    # The one run as a process: `python -m app.auth.token` prints the token and exits 0.
    result = run_cli(tmp_path, "alice", AUTH_JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    principal = await SharedSecretVerifier(SECRET).verify(lines[0])
    assert principal.user_id == "alice"
    assert principal.claims["exp"] - principal.claims["iat"] == 3600
    assert SECRET not in result.stdout + result.stderr


async def test_sets_iss_aud_and_ttl(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(
        monkeypatch,
        capsys,
        "bob",
        "--ttl",
        "120",
        AUTH_JWT_SECRET=SECRET,
        AUTH_ISSUER="https://iss.test",
        AUTH_AUDIENCE="https://aud.test",
    )
    assert code == 0, err
    token = out.strip()
    strict = SharedSecretVerifier(SECRET, issuer="https://iss.test", audience="https://aud.test")
    principal = await strict.verify(token)
    assert principal.user_id == "bob"
    assert principal.claims["exp"] - principal.claims["iat"] == 120
    with pytest.raises(AuthenticationError):
        await SharedSecretVerifier(SECRET, audience="https://other.test").verify(token)


async def test_uses_the_local_secret_without_auth_settings(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(monkeypatch, capsys, "carol")
    assert code == 0, err
    secret = ensure_local_secret(cli_env / "data")
    principal = await SharedSecretVerifier(secret).verify(out.strip())
    assert principal.user_id == "carol"


def test_jwks_mode_exits_2_with_a_message(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(
        monkeypatch, capsys, "alice", AUTH_JWKS_URL="https://auth.example.test/api/auth/jwks"
    )
    assert code == 2
    assert out == ""
    assert "identity provider" in err


def test_invalid_settings_exit_2(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_JWT_SECRET", "too-short")
    assert main(["alice"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "AUTH_JWT_SECRET" in err
    assert "too-short" not in err


@pytest.mark.parametrize("ttl", ["0", "-5", "999999999"])
def test_out_of_range_ttl_exits_2(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    assert main(["alice", "--ttl", ttl]) == 2
    assert capsys.readouterr().out == ""


def test_blank_user_exits_2(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    assert main(["  "]) == 2
    assert capsys.readouterr().out == ""
