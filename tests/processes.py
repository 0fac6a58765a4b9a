"""Stopping a subprocess the way a supervisor would: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess


def terminate(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Ask `process` to stop, kill it if it is still running after `timeout`; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
