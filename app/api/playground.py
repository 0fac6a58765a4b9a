"""The browser playground: its page and assets, its config, and dev tokens for local sign-in.

`GET /` and `GET /playground/<asset>` serve the static page shipped in `app/playground/static`
when PLAYGROUND is on. `GET /api/playground/config` tells the page how to sign in. In the
local-secret mode `POST /api/dev/token` mints a token for a name, for loopback callers only;
everywhere else each of these answers 404.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ValidationError

from app.api.deps import SettingsDep
from app.api.request_body import read_body
from app.auth.shared_secret import SharedSecretVerifier
from app.errors import BadRequestError, NotFoundError
from app.settings import Settings

router = APIRouter()

STATIC_DIR = Path(__file__).resolve().parents[1] / "playground" / "static"
ASSET_NAME = re.compile(r"^[a-z][a-z0-9-]*\.(js|css)$")
MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
# The page loads nothing but its own files; it may call any API origin (`?api=` in tests).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

DEV_TOKEN_SECONDS = 3600
MAX_DEV_TOKEN_BODY_BYTES = 4096
MAX_USER_CHARS = 64
# Headers a reverse proxy adds: behind one, every caller would look like a loopback client.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


class PlaygroundConfig(BaseModel):
    """How the playground signs in: `name` (POST /api/dev/token) or `token` (paste a bearer)."""

    sign_in: Literal["name", "token"]


class DevTokenRequest(BaseModel):
    """The name to sign in as; it becomes the token's `sub`."""

    user: str


class DevTokenResponse(BaseModel):
    """A bearer token for this server and its lifetime in seconds."""

    token: str
    expires_in: int


def _require_playground(settings: Settings) -> None:
    if not settings.playground_enabled:
        raise NotFoundError("Not found.")


def _file(name: str, kind: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type=MEDIA_TYPES[kind], headers=PAGE_HEADERS)


@router.get("/", include_in_schema=False)
async def playground_page(settings: SettingsDep) -> FileResponse:
    _require_playground(settings)
    return _file("index.html", "html")


@router.get("/playground/{name}", include_in_schema=False)
async def playground_asset(name: str, settings: SettingsDep) -> FileResponse:
    _require_playground(settings)
    match = ASSET_NAME.fullmatch(name)
    if match is None or not await anyio.Path(STATIC_DIR / name).is_file():
        raise NotFoundError("Not found.")
    return _file(name, match.group(1))


@router.get("/api/playground/config", tags=["playground"])
async def playground_config(settings: SettingsDep) -> PlaygroundConfig:
    """How the playground page signs in; 404 when PLAYGROUND is off."""
    _require_playground(settings)
    return PlaygroundConfig(sign_in="name" if settings.local_secret_mode else "token")


@router.post(
    "/api/dev/token",
    tags=["playground"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DevTokenRequest.model_json_schema()}},
        }
    },
)
async def dev_token(request: Request, settings: SettingsDep) -> DevTokenResponse:
    """A token for a name: local-secret mode, playground on, loopback callers only; else 404."""
    verifier = getattr(request.app.state, "verifier", None)
    if (
        not settings.local_secret_mode
        or not settings.playground_enabled
        or not isinstance(verifier, SharedSecretVerifier)
        or not is_local_request(request)
    ):
        raise NotFoundError("Not found.")
    body = await read_body(request, MAX_DEV_TOKEN_BODY_BYTES)
    try:
        payload = DevTokenRequest.model_validate_json(body)
    except ValidationError:
        raise BadRequestError('Send a JSON body {"user": "<name>"}.') from None
    user = valid_user_name(payload.user)
    ttl = min(DEV_TOKEN_SECONDS, settings.auth_max_token_lifetime_seconds)
    return DevTokenResponse(token=verifier.mint(user, ttl_seconds=ttl), expires_in=ttl)


def valid_user_name(name: str) -> str:
    """The trimmed name, or a 400 naming what is wrong with it."""
    name = name.strip()
    if not name:
        raise BadRequestError("The user name must not be empty.")
    if len(name) > MAX_USER_CHARS:
        raise BadRequestError(f"The user name has at most {MAX_USER_CHARS} characters.")
    if not name.isprintable():
        raise BadRequestError("The user name must not contain control characters.")
    return name


def is_local_request(request: Request) -> bool:
    """A direct request from this machine: loopback peer, loopback Host, no proxy headers.

    Only the socket's peer address counts (never X-Forwarded-For). The Host check keeps a web
    page that rebinds its own DNS name to 127.0.0.1 from reading a token.
    """
    if request.client is None or not _is_loopback_ip(request.client.host):
        return False
    if any(header in request.headers for header in FORWARDING_HEADERS):
        return False
    return _is_loopback_host(request.headers.get("host", ""))


def _is_loopback_ip(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _is_loopback_host(host_header: str) -> bool:
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return _is_loopback_ip(host)
