"""The header and claim rules both verifiers apply, so every auth mode refuses the same tokens."""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.types import Options

from app.auth.base import Principal
from app.errors import AuthenticationError

MAX_TOKEN_BYTES = 8 * 1024
# Matches the user_id columns of the store: a longer `sub` could never be saved.
MAX_SUBJECT_CHARS = 255
MAX_KID_CHARS = 256
# Header parameters that point the verifier at keys chosen by the token's author, or that
# demand extensions we do not implement. A token carrying any of them is refused outright.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})
# Token types an access token may declare. Anything else (Better Auth's session cookie cache,
# `better-auth.session-cache+jwt`, is signed with the same key) is another kind of token.
ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})

_SIGNATURE_ONLY: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


@dataclass(frozen=True, slots=True)
class TokenHeader:
    """The parts of an unverified JOSE header a verifier may act on."""

    alg: str
    kid: str | None


def read_header(token: str, *, algorithms: Collection[str]) -> TokenHeader:
    """Parse the unverified header of a compact JWS and apply the header rules."""
    if not isinstance(token, str) or not token:
        raise AuthenticationError("missing token", reason="missing")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthenticationError("token too large", reason="malformed")
    segments = token.split(".")
    if not token.isascii() or len(segments) != 3 or not all(segments):
        raise AuthenticationError("malformed token", reason="malformed")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        raise AuthenticationError("malformed token", reason="malformed") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise AuthenticationError("token algorithm not allowed", reason="signature")
    if FORBIDDEN_HEADERS.intersection(header):
        raise AuthenticationError("unsupported token header", reason="malformed")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES):
        raise AuthenticationError("not an access token", reason="wrong_type")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS):
        raise AuthenticationError("invalid key id", reason="malformed")
    return TokenHeader(alg=alg, kid=kid)


def verify_signature(
    token: str, key: Any, *, algorithm: str, enforce_minimum_key_length: bool = False
) -> dict[str, Any]:
    """Check the signature with one key and one algorithm; return the unchecked claims."""
    options: Options = {
        **_SIGNATURE_ONLY,
        "enforce_minimum_key_length": enforce_minimum_key_length,
    }
    try:
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=[algorithm], options=options)
    except jwt.InvalidSignatureError:
        raise AuthenticationError("invalid signature", reason="signature") from None
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        raise AuthenticationError("malformed token", reason="malformed") from None
    return claims


def _numeric(claims: Mapping[str, Any], name: str, *, required: bool) -> float | int | None:
    if name not in claims:
        if required:
            raise AuthenticationError(f"invalid token: {name} is required")
        return None
    value = claims[name]
    # bool is an int subclass; NaN and infinities are floats that compare badly.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthenticationError(f"invalid token: {name} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise AuthenticationError(f"invalid token: {name} must be a number")
    return value


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """The claim checks every verifier applies after the signature is good."""

    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = 30
    max_lifetime_seconds: int = 86_400

    def principal(self, claims: dict[str, Any], *, now: float | None = None) -> Principal:
        """Check `claims` and return the caller they name; raise AuthenticationError if not."""
        now = time.time() if now is None else now
        leeway = self.leeway_seconds

        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise AuthenticationError("invalid token: sub must be a non-empty string")
        if len(sub) > MAX_SUBJECT_CHARS:
            raise AuthenticationError("invalid token: sub is too long")
        if not sub.isprintable():
            # A user id is stored and logged: no NUL (Postgres refuses it) or control characters.
            raise AuthenticationError("invalid token: sub has control characters")

        exp = _numeric(claims, "exp", required=True)
        iat = _numeric(claims, "iat", required=True)
        nbf = _numeric(claims, "nbf", required=False)
        assert exp is not None and iat is not None
        if exp <= now - leeway:
            raise AuthenticationError("token expired", reason="expired")
        if iat > now + leeway:
            raise AuthenticationError("token issued in the future", reason="not_yet_valid")
        if nbf is not None and nbf > now + leeway:
            raise AuthenticationError("token not yet valid", reason="not_yet_valid")
        if exp < iat:
            raise AuthenticationError("invalid token: exp before iat")
        if exp - iat > self.max_lifetime_seconds:
            raise AuthenticationError("token lifetime too long")

        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise AuthenticationError("invalid token issuer")
        if self.audience is not None and not _has_audience(claims.get("aud"), self.audience):
            raise AuthenticationError("invalid token audience")
        return Principal(user_id=sub, claims=claims)


def _has_audience(aud: object, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return expected in aud
    return False
