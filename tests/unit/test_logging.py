"""configure_logging: one handler, our format, and chatkit's lines written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# chatkit attaches its own handler when LOG_LEVEL is in the environment at its import; the
# script imports it first, as the app does, then configures logging twice (lifespan and
# `python -m app` both do) and logs one line through chatkit's logger and one through ours.
SCRIPT = """
import logging
import chatkit.logger
chatkit_handlers = len(logging.getLogger("chatkit").handlers)
from app.logging import configure_logging
configure_logging(level="INFO", json_lines=True)
configure_logging(level="INFO", json_lines=True)
logging.getLogger("chatkit").info("chatkit.line")
logging.getLogger("app.somewhere").info("app.line")
print(chatkit_handlers)
"""


def test_chatkit_lines_come_out_once_in_our_format() -> None:
    env = {**os.environ, "LOG_LEVEL": "INFO"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The case this guards against is real: chatkit did attach a handler of its own.
    assert int(result.stdout.strip()) >= 1
    lines = result.stderr.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [(r["logger"], r["event"]) for r in records] == [
        ("chatkit", "chatkit.line"),
        ("app.somewhere", "app.line"),
    ]
    assert all(r["request_id"] == "-" and r["user_id"] == "-" for r in records)
