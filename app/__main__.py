"""`python -m app`: run the server with uvicorn on HOST:PORT."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.logging import configure_logging
from app.observability.multiprocess_dir import metrics_dir_for_workers
from app.settings import SettingsError, load_settings

GRACE_BACKSTOP_SECONDS = 10
WORKER_HEALTHCHECK_SECONDS = 30


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, json_lines=settings.log_json)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "proxy_headers": False,
        # The app cuts streams itself after SHUTDOWN_GRACE_SECONDS (with an event saying to
        # retry); uvicorn's own limit is only a backstop for anything that ignores it.
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds + GRACE_BACKSTOP_SECONDS,
    }
    # Set up before any worker imports prometheus_client: one directory of metric values for all.
    with metrics_dir_for_workers(settings.web_concurrency):
        if settings.web_concurrency == 1:
            # Imported here, after the metrics directory is settled (app.main imports
            # prometheus_client); the app is built from the settings read above, not again.
            from app.main import create_app

            uvicorn.run(create_app(settings), **options)  # exits with code 3 when startup fails
            return 0
        config = uvicorn.Config(
            # Each worker process builds its own app (and reads the settings once, in it).
            "app.main:create_app",
            factory=True,
            workers=settings.web_concurrency,
            # uvicorn kills a worker that does not answer its parent's ping within this; a new
            # worker answers only once Python has started it, which takes seconds on a busy
            # machine (5 s, the default, made workers restart in a loop there).
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            **options,
        )
        return _run_workers(config)


def _run_workers(config: uvicorn.Config) -> int:
    """WEB_CONCURRENCY processes on one socket; non-zero when a worker could not start.

    This is what `uvicorn.run(..., workers=N)` does, keeping the workers' exit codes: uvicorn stops
    the parent when a worker fails to start (say the database never answered) but exits with 0.
    """
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


if __name__ == "__main__":
    sys.exit(main())
