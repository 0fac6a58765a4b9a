"""The generated local secret: processes starting at once agree on one secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.auth.local_secret import ensure_local_secret

_CHILD = """
import sys
from pathlib import Path
from app.auth.local_secret import ensure_local_secret
print("ready", flush=True)
sys.stdin.readline()  # blocked, not spinning, until the parent releases every child
print(ensure_local_secret(Path(sys.argv[1])))
"""


def test_racing_processes_agree_on_one_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "race"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        # Every child has imported and waits: released together, they really race (a fixed
        # start time would have to guess how long eight imports take on a busy machine).
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        secrets = {child.communicate(timeout=60)[0].strip() for child in children}
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert all(child.returncode == 0 for child in children)
    assert secrets == {ensure_local_secret(data_dir)}
