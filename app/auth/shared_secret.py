"""Shared-secret (HS256) token verification, for deployments that mint their own tokens."""

from __future__ import annotations

import time
from typing import Any

import jwt

from app.auth.base import Principal
from app.auth.jwt_rules import ClaimRules, read_header, verify_signature

_ALGORITHM = "HS256"


class SharedSecretVerifier:
    """Verifies (and mints) HS256 tokens signed with one shared secret."""

    def __init__(
        self,
        secret: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: int = 30,
        max_lifetime_seconds: int = 86_400,
    ) -> None:
        if not isinstance(secret, str) or not secret.strip():
            raise ValueError("the shared secret must not be empty")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._rules = ClaimRules(
            issuer=issuer,
            audience=audience,
            leeway_seconds=leeway_seconds,
            max_lifetime_seconds=max_lifetime_seconds,
        )

    def __repr__(self) -> str:
        return f"SharedSecretVerifier(issuer={self._issuer!r}, audience={self._audience!r})"

    async def verify(self, token: str) -> Principal:
        read_header(token, algorithms=(_ALGORITHM,))
        claims = verify_signature(token, self._secret, algorithm=_ALGORITHM)
        return self._rules.principal(claims)

    async def aclose(self) -> None:
        return None

    def mint(self, user_id: str, *, ttl_seconds: int = 3600, **extra: Any) -> str:
        """Sign a token for `user_id` (local use, tests and `make token`)."""
        if not user_id.strip():
            raise ValueError("user_id must not be empty")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        claims.update(extra)  # last, so tests can mint deliberately wrong claims
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)
