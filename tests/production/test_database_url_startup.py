"""A DATABASE_URL parameter asyncpg cannot take stops `python -m app` with exit 2 and one line
that names the parameter, never the password (the parsing itself: tests/unit/store/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import REPO_ROOT

SECRET = "s3cr3t-Pa55"
BASE = f"postgresql://app:{SECRET}@db.example.com:6543/chat"


def test_an_unsupported_parameter_stops_startup(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "OPENAI_"))}
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO_ROOT,
        env={**clean, "DATA_DIR": str(tmp_path), "DATABASE_URL": f"{BASE}?sslnegotiation=direct"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr and "sslnegotiation" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
