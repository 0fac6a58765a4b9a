"""The generated local secret: created once, private, shared by racing threads (racing
processes: tests/auth/test_local_secret_processes.py)."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.auth.local_secret import ensure_local_secret


def test_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    secret = ensure_local_secret(data_dir)
    path = data_dir / "jwt-secret"

    assert len(secret) >= 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == secret
    assert ensure_local_secret(data_dir) == secret
    assert [p.name for p in data_dir.iterdir()] == ["jwt-secret"]  # no temp files left


def test_different_data_dirs_get_different_secrets(tmp_path: Path) -> None:
    assert ensure_local_secret(tmp_path / "a") != ensure_local_secret(tmp_path / "b")


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    secret = ensure_local_secret(tmp_path)
    path = tmp_path / "jwt-secret"
    path.chmod(0o644)
    assert ensure_local_secret(tmp_path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unusable_secret_file_is_an_error_not_silently_replaced(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_text("short\n")
    with pytest.raises(RuntimeError, match="delete it"):
        ensure_local_secret(tmp_path)


def test_racing_threads_agree_on_one_secret(tmp_path: Path) -> None:
    with ThreadPoolExecutor(16) as pool:
        secrets = set(pool.map(ensure_local_secret, [tmp_path / "threads"] * 64))
    assert len(secrets) == 1
