"""The directory prometheus-client's multiprocess mode shares between worker processes.

Kept apart from `metrics.py` so the parent process can set it up without importing
prometheus_client: the mode is chosen when that is first imported, from the environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, or None when metrics live in one process."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def clear_metric_files(path: Path) -> None:
    """Remove the value files of an earlier run: they would be added to this run's counters."""
    path.mkdir(parents=True, exist_ok=True)
    for file in path.glob("*.db"):
        file.unlink(missing_ok=True)


@contextmanager
def metrics_dir_for_workers(workers: int) -> Iterator[str | None]:
    """In the parent process, before workers start: the directory they will share.

    A PROMETHEUS_MULTIPROC_DIR given by the operator is emptied of old value files; otherwise,
    with more than one worker, a temporary directory is made for this run and removed after it.
    One worker and no directory given: the ordinary single-process registry (yields None).
    """
    given = multiprocess_dir()
    if given is not None:
        clear_metric_files(Path(given))
        yield given
        return
    # Set but empty would still switch prometheus-client to files, in the working directory.
    os.environ.pop(MULTIPROC_DIR_ENV, None)
    if workers <= 1:
        yield None
        return
    path = tempfile.mkdtemp(prefix="chatkit-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
