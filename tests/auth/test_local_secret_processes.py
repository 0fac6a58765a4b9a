"""The generated local secret: processes starting at once agree on one secret."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from app.auth.local_secret import ensure_local_secret

_CHILD = """
import sys, time
from pathlib import Path
from app.auth.local_secret import ensure_local_secret
start = float(sys.argv[2])
while time.time() < start:
    pass
print(ensure_local_secret(Path(sys.argv[1])))
"""


def test_racing_processes_agree_on_one_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "race"
    start = time.time() + 1.0  # every child spins until then, so they really race
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(data_dir), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    secrets = {child.communicate(timeout=60)[0].strip() for child in children}
    assert all(child.returncode == 0 for child in children)
    assert secrets == {ensure_local_secret(data_dir)}
