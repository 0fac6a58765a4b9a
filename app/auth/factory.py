"""Settings -> the one TokenVerifier of the process (JWKS, shared secret, or local secret)."""

from __future__ import annotations

import logging
from typing import TypedDict
from urllib.parse import urlsplit, urlunsplit

import httpx2

from app.auth.base import TokenVerifier
from app.auth.jwks import JwksCache
from app.auth.jwks_verifier import JwksVerifier
from app.auth.local_secret import ensure_local_secret, local_secret_path
from app.auth.shared_secret import SharedSecretVerifier
from app.settings import Settings

logger = logging.getLogger(__name__)


class _ClaimSettings(TypedDict):
    issuer: str | None
    audience: str | None
    leeway_seconds: int
    max_lifetime_seconds: int


def build_verifier(
    settings: Settings, *, http_client: httpx2.AsyncClient | None = None
) -> TokenVerifier:
    """JWKS mode with AUTH_JWKS_URL, shared-secret mode with AUTH_JWT_SECRET, else a local secret.

    `http_client` (JWKS mode only) is used for fetches and left open by `aclose()`.
    """
    rules: _ClaimSettings = {
        "issuer": settings.auth_issuer,
        "audience": settings.auth_audience,
        "leeway_seconds": settings.auth_leeway_seconds,
        "max_lifetime_seconds": settings.auth_max_token_lifetime_seconds,
    }
    if settings.auth_jwks_url:
        if settings.auth_audience is None:
            logger.warning(
                "auth.audience_unchecked: AUTH_AUDIENCE is unset, so any token signed by the "
                "issuer's keys passes (including Better Auth session-cache tokens)"
            )
        cache = JwksCache(
            settings.auth_jwks_url,
            client=http_client,
            cache_seconds=settings.auth_jwks_cache_seconds,
            stale_seconds=settings.auth_jwks_stale_seconds,
        )
        return JwksVerifier(cache, algorithms=settings.auth_algorithms, **rules)
    if settings.auth_jwt_secret is not None:
        return SharedSecretVerifier(settings.auth_jwt_secret.get_secret_value(), **rules)
    secret = ensure_local_secret(settings.data_dir)
    logger.warning(
        "auth.local_secret: no AUTH_JWKS_URL or AUTH_JWT_SECRET; tokens are signed with the "
        "generated secret in %s; get one with `make token USER=<name>`",
        local_secret_path(settings.data_dir),
    )
    return SharedSecretVerifier(secret, **rules)


def describe_auth_mode(settings: Settings) -> str:
    """One line for the startup log: which auth mode is on, without any secret."""
    checks = (
        f"issuer={settings.auth_issuer or 'unchecked'} "
        f"audience={settings.auth_audience or 'unchecked'}"
    )
    if settings.auth_jwks_url:
        algorithms = ",".join(settings.auth_algorithms)
        url = _without_credentials(settings.auth_jwks_url)
        return f"jwks url={url} algorithms={algorithms} {checks}"
    if settings.auth_jwt_secret is not None:
        return f"shared-secret (AUTH_JWT_SECRET, HS256) {checks}"
    return (
        f"local-secret ({local_secret_path(settings.data_dir)}, HS256; "
        f"tokens from `make token USER=<name>`) {checks}"
    )


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
