"""Verification of asymmetric tokens (EdDSA, ES256/512, RS256, PS256) with the issuer's JWKS."""

from __future__ import annotations

from collections.abc import Sequence

from app.auth.base import Principal
from app.auth.jwks import JwksCache, SigningKey
from app.auth.jwt_rules import ClaimRules, TokenHeader, read_header, verify_signature
from app.errors import AuthenticationError

ASYMMETRIC_ALGORITHMS = frozenset({"EdDSA", "ES256", "ES512", "RS256", "PS256"})


class JwksVerifier:
    """Verifies tokens signed by a key of the issuer's JWKS (the Better Auth `jwt` plugin)."""

    def __init__(
        self,
        keys: JwksCache,
        *,
        algorithms: Sequence[str],
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: int = 30,
        max_lifetime_seconds: int = 86_400,
    ) -> None:
        unsupported = set(algorithms) - ASYMMETRIC_ALGORITHMS
        if unsupported or not algorithms:
            # HS* with a public key as secret and `none` are the classic confusions: never allow.
            raise ValueError(f"unsupported JWKS algorithms: {sorted(unsupported) or 'none given'}")
        self._keys = keys
        self._algorithms = frozenset(algorithms)
        self._rules = ClaimRules(
            issuer=issuer,
            audience=audience,
            leeway_seconds=leeway_seconds,
            max_lifetime_seconds=max_lifetime_seconds,
        )

    async def verify(self, token: str) -> Principal:
        header = read_header(token, algorithms=self._algorithms)
        key = await self._key_for(header)
        claims = verify_signature(
            token,
            key.by_algorithm[header.alg],
            algorithm=header.alg,
            enforce_minimum_key_length=True,
        )
        return self._rules.principal(claims)

    async def aclose(self) -> None:
        await self._keys.aclose()

    async def _key_for(self, header: TokenHeader) -> SigningKey:
        keys = await self._keys.get()
        if header.kid is None:
            # Without a kid the choice must be unambiguous.
            fitting = keys.fitting(header.alg)
            if len(fitting) != 1:
                raise AuthenticationError("token has no key id", reason="unknown_key")
            return fitting[0]
        candidates = keys.with_kid(header.kid)
        if not candidates:
            # A key rotated in since the last fetch is used at once: refetch before refusing.
            keys = await self._keys.refresh_for_unknown_kid()
            candidates = keys.with_kid(header.kid)
            if not candidates:
                raise AuthenticationError("unknown signing key", reason="unknown_key")
        for key in candidates:
            if key.fits(header.alg):
                return key
        raise AuthenticationError(
            "signing key does not fit the token algorithm", reason="signature"
        )
