"""Logging: module loggers, a request id and user id on every line, JSON when LOG_JSON is set."""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
user_id_var: ContextVar[str] = ContextVar("user_id", default="-")

# Attributes every LogRecord has; anything else came in through `extra=` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
# Never written to a log line, whatever a caller passes in `extra=`.
_SECRET_FIELDS = {"token", "authorization", "password", "secret", "api_key", "text", "content"}


# Query parameters that grant access by themselves (signed attachment preview links).
_SECRET_QUERY = re.compile(r"([?&](?:sig|token|access_token)=)[^&\s]*")


class _AccessLinkFilter(logging.Filter):
    """Access-log lines keep their paths but not the signatures in their query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _SECRET_QUERY.sub(r"\1[redacted]", args[2]), *args[3:])
        return True


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.user_id = user_id_var.get()
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and key not in _SECRET_FIELDS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # tells WEB_CONCURRENCY workers apart
            "event": record.getMessage(),
        }
        payload.update(_extra_fields(record))
        if record.exc_info:
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the same fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in _extra_fields(record).items())
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()} {fields}"
        ).rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# The name (`Handler.name`) of the root handler configure_logging installs: a second call
# replaces it instead of adding another.
APP_HANDLER_NAME = "app"
# Loggers whose records are written by the root handler only. The logging HOWTO asks libraries
# to attach no handler but a NullHandler; chatkit attaches a plain-text StreamHandler to its
# logger when LOG_LEVEL is in the environment (as it is for us), which would print each of its
# lines a second time, outside our format and without the request id.
HANDLED_AT_ROOT = ("chatkit",)


def configure_logging(*, level: str, json_lines: bool) -> None:
    """Install one handler on the root logger (idempotent)."""
    handler = logging.StreamHandler()
    handler.set_name(APP_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == APP_HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party loggers that would print request bodies or headers at debug level.
    for noisy in ("openai", "mcp", "openai.agents"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))
    # httpx2 logs a line per outbound request at INFO (every model and MCP call): a cost per
    # turn that says nothing the turn's own log lines do not.
    for chatty in ("httpx2", "httpcore2"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, _AccessLinkFilter) for existing in access.filters):
        access.addFilter(_AccessLinkFilter())
    # Whatever handlers a library attached (its own business how), its lines reach ours only.
    for name in HANDLED_AT_ROOT:
        library = logging.getLogger(name)
        for existing in list(library.handlers):
            library.removeHandler(existing)
        library.propagate = True
