"""The OpenAPI description of the server, and a docs page that renders it without any CDN."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from chatkit.types import ChatKitReq, ThreadStreamEvent
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from pydantic import TypeAdapter

from app.errors import NotFoundError

router = APIRouter(include_in_schema=False)

DOCS_DIR = Path(__file__).parent / "docs_static"
CHATKIT_PATH = "/api/chatkit"
SCHEMA_REF = "#/components/schemas/{model}"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
ERROR_STATUSES = {
    "400": "Malformed body, unknown op, or a feature this server does not enable.",
    "401": "Missing or invalid bearer token (with `WWW-Authenticate`).",
    "404": "The thread or item does not exist, or belongs to someone else.",
    "409": "The thread is locked, closed, or still answering.",
    "413": "The body is larger than MAX_BODY_BYTES.",
    "429": "A per-user limit was reached; `Retry-After` says when to retry.",
    "503": "The database is unreachable or the server is busy; `Retry-After` is set.",
}
ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "description": "Every error response of this server.",
    "properties": {
        "type": {"type": "string", "examples": ["not_found"]},
        "message": {"type": "string"},
        "status_code": {"type": "integer", "examples": [404]},
    },
    "required": ["type", "message", "status_code"],
}


def _schema_with_defs(adapter: TypeAdapter[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A type's JSON schema with its definitions split out for `components.schemas`."""
    with warnings.catch_warnings():
        # A few SDK generics have defaults JSON cannot hold; they are left out, which is fine.
        warnings.simplefilter("ignore")
        schema = adapter.json_schema(ref_template=SCHEMA_REF)
    return schema, schema.pop("$defs", {})


def _error_responses() -> dict[str, Any]:
    body = {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="Error")}}}
    return {
        status: {"description": text, "content": body} for status, text in ERROR_STATUSES.items()
    }


def describe_chatkit(spec: dict[str, Any]) -> dict[str, Any]:
    """Add the protocol's request union, its stream events, errors and the bearer scheme."""
    request, request_defs = _schema_with_defs(TypeAdapter(ChatKitReq))
    event, event_defs = _schema_with_defs(TypeAdapter(ThreadStreamEvent))
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({**request_defs, **event_defs, "Error": ERROR_SCHEMA})
    schemas["ChatKitRequest"] = {"title": "ChatKitRequest", **request}
    schemas["ThreadStreamEvent"] = {"title": "ThreadStreamEvent", **event}
    spec["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT from the configured issuer (JWKS or shared secret); "
            "`sub` is the user.",
        }
    }
    operation = spec["paths"][CHATKIT_PATH]["post"]
    operation["security"] = [{"bearer": []}]
    operation["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": SCHEMA_REF.format(model="ChatKitRequest")}}
        },
    }
    operation["responses"] = {
        "200": {
            "description": "Streaming ops (threads.create, threads.add_user_message, ...) answer "
            "with server-sent events, one `data: <ThreadStreamEvent JSON>` frame each, and end "
            "when the response closes; the other ops answer with JSON ({} for deletes and "
            "feedback).",
            "content": {
                "text/event-stream": {
                    "schema": {"$ref": SCHEMA_REF.format(model="ThreadStreamEvent")}
                },
                "application/json": {"schema": {"type": "object"}},
            },
        },
        **_error_responses(),
    }
    return spec


def install_openapi(app: FastAPI) -> None:
    """Serve /openapi.json (built once, on first use) and /docs."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = describe_chatkit(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(router)


@router.get("/docs")
async def docs_page() -> FileResponse:
    return FileResponse(DOCS_DIR / "docs.html", headers=PAGE_HEADERS, media_type="text/html")


@router.get("/docs/{asset}")
async def docs_asset(asset: str) -> FileResponse:
    media = {"docs.js": "text/javascript", "docs.css": "text/css"}.get(asset)
    if media is None:
        raise NotFoundError("Not found.")
    return FileResponse(DOCS_DIR / asset, headers=PAGE_HEADERS, media_type=media)
