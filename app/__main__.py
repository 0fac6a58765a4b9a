"""`python -m app`: run the server with uvicorn on HOST:PORT."""

from __future__ import annotations

import sys

import uvicorn

from app.logging import configure_logging
from app.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, json_lines=settings.log_json)
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
