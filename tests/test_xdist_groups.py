"""`make test`'s worker groups hold: a module's server fixture starts once, on one worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

CONFTEST = """
from typing import Any
import pytest
from tests import xdist_groups

def pytest_configure(config: pytest.Config) -> None:
    xdist_groups.announce_file(config)

def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    xdist_groups.record_groups(items)

def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return xdist_groups.make_scheduler(config, log)
"""

SERVED = """
import os
import pytest

@pytest.fixture(scope="module")
def server() -> str:
    with open(os.environ["STARTS_FILE"], "a") as starts:
        starts.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
    return "started"

@pytest.mark.parametrize("n", range(6))
def test_uses_the_server(server: str, n: int) -> None:
    assert server == "started"
"""

FREE = """
import pytest

@pytest.mark.parametrize("n", range(6))
def test_free(n: int) -> None:
    assert n >= 0
"""


def test_a_module_fixture_starts_once_across_two_workers(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_served.py").write_text(SERVED)
    (tmp_path / "test_free.py").write_text(FREE)
    starts = tmp_path / "starts.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STARTS_FILE": str(starts)}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("TESTS_XDIST_GROUPS_FILE", None)
    argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup"]
    run = subprocess.run(
        [sys.executable, *argv, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "12 passed" in run.stdout
    # One start: every test of the module ran on the worker that started its server.
    assert len(starts.read_text().split()) == 1, starts.read_text()
