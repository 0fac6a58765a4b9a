"""Nothing happens at import: `app.main:app` is built on first access, from settings read once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

import app.__main__ as entry
from app.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter: importing app.main with an invalid setting in the environment must not
# fail (nothing is read), the first access to `app` must (it is built then), and once the
# setting is fixed the app is built once and kept.
IMPORT_SCRIPT = """
import json, os
import app.main
report = {"built_at_import": "app" in vars(app.main)}
try:
    app.main.app
except Exception as exc:
    report["first_access"] = [type(exc).__name__, str(exc)]
del os.environ["HISTORY_LIMIT"]
first = app.main.app
report["type"] = type(first).__name__
report["kept"] = app.main.app is first and vars(app.main)["app"] is first
report["other_names"] = hasattr(app.main, "no_such_name")
print(json.dumps(report))
"""


def test_importing_app_main_reads_and_builds_nothing(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "OPENAI_"))}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT],
        cwd=REPO_ROOT,
        env={**clean, "DATA_DIR": str(tmp_path), "HISTORY_LIMIT": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["built_at_import"] is False
    error_type, message = report["first_access"]
    assert error_type == "SettingsError" and "HISTORY_LIMIT" in message
    assert report["type"] == "FastAPI"
    assert report["kept"] is True
    assert report["other_names"] is False


@pytest.fixture
def root_logging() -> Iterator[None]:
    """`main()` configures logging for the process: give the test process its own back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_python_m_app_serves_the_app_built_from_the_settings_it_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root_logging: None
) -> None:
    for name in list(os.environ):
        # No auth or model of the outer environment; no exporter installed in this process.
        if name.startswith(("AUTH_", "OPENAI_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reads: list[Settings] = []

    def counted_load_settings() -> Settings:
        reads.append(load_settings())
        return reads[-1]

    served: list[tuple[object, dict[str, Any]]] = []

    def run(target: object, **options: Any) -> None:
        served.append((target, options))

    monkeypatch.setattr(entry, "load_settings", counted_load_settings)
    monkeypatch.setattr(uvicorn, "run", run)
    assert entry.main() == 0
    assert len(reads) == 1
    [(target, options)] = served
    assert isinstance(target, FastAPI)
    assert target.state.settings is reads[0]  # not read a second time to build the app
    assert options["port"] == reads[0].port
