"""Shared-secret (HS256) token verification, for deployments that mint their own tokens."""

from __future__ import annotations

from typing import Any

import jwt

from app.auth.base import Principal
from app.errors import AuthenticationError


class SharedSecretVerifier:
    """Verifies HS256 tokens signed with one shared secret."""

    def __init__(
        self,
        secret: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: int = 30,
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds

    async def verify(self, token: str) -> Principal:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={
                    "require": ["sub", "exp", "iat"],
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError("invalid token") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise AuthenticationError("invalid token: sub must be a non-empty string")
        return Principal(user_id=sub, claims=claims)

    async def aclose(self) -> None:
        return None

    def mint(self, user_id: str, *, ttl_seconds: int = 3600, **extra: Any) -> str:
        """Sign a token for `user_id` (local use, tests and `make token`)."""
        import time

        now = int(time.time())
        claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds, **extra}
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._secret, algorithm="HS256")
