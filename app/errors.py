"""The application's error family, rendered in one place as `{type, message, status_code}`.

    AppError (status_code, type)
    ├── BadRequestError 400 bad_request
    │   └── FeatureDisabledError 400 feature_not_enabled
    ├── AuthenticationError 401 invalid_token (+ WWW-Authenticate; `reason` for metrics)
    ├── NotFoundError 404 not_found
    ├── RequestTimeoutError 408 request_timeout
    ├── ConflictError 409 conflict
    │   └── ThreadBusyError 409 thread_busy
    ├── PayloadTooLargeError 413 payload_too_large
    ├── RateLimitedError 429 rate_limited (+ Retry-After)
    └── ServiceUnavailableError 503 service_unavailable (+ Retry-After)
        ├── DatabaseUnavailableError 503
        └── ServerBusyError 503

Domain code raises these (or the SDK's NotFoundError / NotImplementedError, or a database
outage, which the handlers below translate); routes never build error responses themselves.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from chatkit.store import NotFoundError as StoreNotFoundError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db_errors import DatabaseFailure, database_failure_message
from app.log_safety import failure_fields, may_quote_user_data

if TYPE_CHECKING:
    from app.observability.metrics import Metrics, RefusalReason

logger = logging.getLogger(__name__)

DB_RETRY_AFTER_SECONDS = 2


class AppError(Exception):
    """Base of every error that reaches a client; carries its HTTP status and a stable type."""

    status_code = 500
    type = "internal_error"
    # Set on errors that refuse a turn before it starts; counted in the refusal metrics.
    refusal: ClassVar[RefusalReason | None] = None

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequestError(AppError):
    status_code = 400
    type = "bad_request"


class AuthenticationError(AppError):
    status_code = 401
    type = "invalid_token"

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        # A fixed word for metrics (missing, malformed, signature, unknown_key, expired, ...).
        self.reason = reason


class NotFoundError(AppError):
    status_code = 404
    type = "not_found"


class ConflictError(AppError):
    status_code = 409
    type = "conflict"


class ThreadBusyError(ConflictError):
    """The thread's previous answer is still running."""

    type = "thread_busy"
    refusal = "thread_busy"


class RequestTimeoutError(AppError):
    status_code = 408
    type = "request_timeout"


class PayloadTooLargeError(AppError):
    status_code = 413
    type = "payload_too_large"


class RateLimitedError(AppError):
    status_code = 429
    type = "rate_limited"
    refusal = "rate_limit"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class FeatureDisabledError(BadRequestError):
    status_code = 400
    type = "feature_not_enabled"


class ServiceUnavailableError(AppError):
    status_code = 503
    type = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(
            message, headers={"Retry-After": str(retry_after)} if retry_after else None
        )


class DatabaseUnavailableError(ServiceUnavailableError):
    """The database did not answer (or no pooled connection came free in time)."""


class ServerBusyError(ServiceUnavailableError):
    """Too many turns wait for a model slot of this process already (MAX_CONCURRENT_TURNS)."""

    refusal = "busy"


def error_body(*, type: str, message: str, status_code: int) -> dict[str, Any]:
    return {"type": type, "message": message, "status_code": status_code}


def error_response(error: AppError) -> JSONResponse:
    return JSONResponse(
        error_body(type=error.type, message=error.message, status_code=error.status_code),
        status_code=error.status_code,
        headers=error.headers,
    )


_HTTP_TYPES = {
    400: "bad_request",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "bad_request",
}


def install_error_handlers(app: FastAPI) -> None:
    """Render AppError, framework HTTP errors and validation errors in the one JSON shape."""

    async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        metrics: Metrics | None = getattr(request.app.state, "metrics", None)
        if exc.refusal is not None and metrics is not None:
            metrics.turn_refused(exc.refusal)
        return error_response(exc)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return JSONResponse(
            error_body(type=_HTTP_TYPES.get(status, "error"), message=message, status_code=status),
            status_code=status,
            headers=dict(exc.headers or {}),
        )

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            error_body(type="bad_request", message="invalid request", status_code=400),
            status_code=400,
        )

    async def on_sdk_not_found(_: Request, exc: Exception) -> JSONResponse:
        # The SDK's store lookups: a thread or item that is missing or someone else's.
        return error_response(NotFoundError("Not found."))

    async def on_not_implemented(_: Request, exc: Exception) -> JSONResponse:
        # The SDK's hooks this server leaves unimplemented (a feature it does not offer).
        return error_response(FeatureDisabledError("This operation is not enabled on this server."))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        outage = database_failure_message(exc)
        if outage is not None:
            logger.warning("request.database_unavailable", extra={"error": type(exc).__name__})
            return await on_app_error(
                request, DatabaseUnavailableError(outage, retry_after=DB_RETRY_AFTER_SECONDS)
            )
        # Our own bug: logged with its traceback (unless its text may quote the user, see
        # app.log_safety), answered in the same JSON shape.
        if may_quote_user_data(exc):
            logger.error("request.unhandled", extra=failure_fields(exc))
        else:
            logger.error("request.unhandled", exc_info=exc)
        return JSONResponse(
            error_body(
                type="internal_error",
                message="Something went wrong on the server.",
                status_code=500,
            ),
            status_code=500,
        )

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(StoreNotFoundError, on_sdk_not_found)
    app.add_exception_handler(NotImplementedError, on_not_implemented)
    app.add_exception_handler(Exception, on_unexpected)
    # Registered by type too, so they are answered inside the app (an `Exception` handler runs
    # in the outermost middleware, which re-raises: the server then closes the connection).
    app.add_exception_handler(SQLAlchemyError, on_unexpected)
    app.add_exception_handler(DatabaseFailure, on_unexpected)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
