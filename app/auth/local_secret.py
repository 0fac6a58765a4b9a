"""The generated signing secret of the embedded default mode, kept under the data directory."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

SECRET_FILE_NAME = "jwt-secret"
_MIN_SECRET_BYTES = 32


def local_secret_path(data_dir: Path) -> Path:
    """Where `ensure_local_secret` keeps the secret."""
    return data_dir / SECRET_FILE_NAME


def ensure_local_secret(data_dir: Path) -> str:
    """Return the secret in `<data_dir>/jwt-secret`, creating it (mode 0600) on first use.

    Safe when several processes start at once: each writes a private temp file and links it
    into place; a link only succeeds if no secret exists, so all of them read the same one.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = local_secret_path(data_dir)
    if not path.exists():
        _create(path)
    return _read(path)


def _create(path: Path) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # If another process won the race, its secret is the one everybody reads.
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o600)
        logger.warning("auth.local_secret_permissions_fixed", extra={"path": str(path)})
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret.encode()) < _MIN_SECRET_BYTES:
        raise RuntimeError(f"{path} holds no usable secret; delete it to generate a new one")
    return secret
