"""An async cache of the issuer's JWKS: TTL, stale fallback, one rate-limited forced refresh."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from app.errors import ServiceUnavailableError

logger = logging.getLogger(__name__)

MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 512 * 1024
# Which algorithms each (kty, crv) may verify. RSA keys carry no curve.
_ALGORITHMS_BY_KEY_TYPE: Mapping[tuple[str, str | None], tuple[str, ...]] = {
    ("OKP", "Ed25519"): ("EdDSA",),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-521"): ("ES512",),
    ("RSA", None): ("RS256", "PS256"),
}
_PUBLIC_KEY_TYPES = (Ed25519PublicKey, EllipticCurvePublicKey, RSAPublicKey)
# Members only a private JWK has: a JWKS that publishes them is misconfigured.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class JwksFetchError(Exception):
    """The JWKS endpoint could not be read or returned an unusable document."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable public key of the issuer, parsed once per algorithm it may verify."""

    kid: str | None
    kty: str
    by_algorithm: Mapping[str, jwt.PyJWK] = field(repr=False)

    def fits(self, algorithm: str) -> bool:
        return algorithm in self.by_algorithm


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS document."""

    keys: tuple[SigningKey, ...]

    def with_kid(self, kid: str) -> list[SigningKey]:
        return [key for key in self.keys if key.kid == kid]

    def fitting(self, algorithm: str) -> list[SigningKey]:
        return [key for key in self.keys if key.fits(algorithm)]


def _skip(jwk: Mapping[str, Any], reason: str) -> None:
    kid = jwk.get("kid")
    logger.warning(
        "jwks.key_skipped: %s",
        reason,
        extra={"kid": kid if isinstance(kid, str) else None, "kty": str(jwk.get("kty"))},
    )


def _parse_key(jwk: Mapping[str, Any]) -> SigningKey | None:
    if _PRIVATE_MEMBERS.intersection(jwk):
        _skip(jwk, "private or symmetric key material in the JWKS")
        return None
    use = jwk.get("use")
    if use is not None and use != "sig":
        return None  # an encryption key: not ours to use, not worth a warning
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        _skip(jwk, "kid is not a string")
        return None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if not isinstance(kty, str) or (crv is not None and not isinstance(crv, str)):
        _skip(jwk, "missing kty")
        return None
    algorithms = _ALGORITHMS_BY_KEY_TYPE.get((kty, crv if kty != "RSA" else None))
    if algorithms is None:
        _skip(jwk, "unsupported key type")
        return None
    declared = jwk.get("alg")
    if declared is not None:
        if declared not in algorithms:
            _skip(jwk, "alg does not fit the key type")
            return None
        algorithms = (declared,)
    parsed: dict[str, jwt.PyJWK] = {}
    for algorithm in algorithms:
        try:
            pyjwk = jwt.PyJWK(dict(jwk), algorithm=algorithm)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            _skip(jwk, "unparseable key")
            return None
        if not isinstance(pyjwk.key, _PUBLIC_KEY_TYPES):
            _skip(jwk, "not a public key")
            return None
        if isinstance(pyjwk.key, RSAPublicKey) and pyjwk.key.key_size < MIN_RSA_BITS:
            _skip(jwk, "RSA key shorter than 2048 bits")
            return None
        parsed[algorithm] = pyjwk
    return SigningKey(kid=kid, kty=kty, by_algorithm=parsed)


def parse_jwks(document: object) -> KeySet:
    """Keep the usable signature keys of a JWKS document; skip (and log) the others."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchError("not a JWKS document")
    keys = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        key = _parse_key(jwk)
        if key is not None:
            keys.append(key)
    return KeySet(keys=tuple(keys))


class JwksCache:
    """The issuer's signing keys, fetched with httpx2 and cached.

    Keys are fresh for `cache_seconds`. An unknown `kid` may force one refresh (shared by all
    concurrent callers, at most one per `min_forced_interval` so random kids cannot hammer the
    issuer). When the endpoint fails, cached keys keep serving for `stale_seconds` past their
    expiry; after that, or with no keys at all, `ServiceUnavailableError` is raised.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx2.AsyncClient | None = None,
        cache_seconds: float = 300,
        stale_seconds: float = 3600,
        min_forced_interval: float = 2.0,
        retry_after_failure: float = 2.0,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._owns_client = client is None
        self._client = client if client is not None else httpx2.AsyncClient()
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_seconds
        self._min_forced_interval = min_forced_interval
        self._retry_after_failure = retry_after_failure
        self._timeout = timeout_seconds
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._failed_at: float | None = None
        self._forced_at: float | None = None
        self._inflight: asyncio.Task[KeySet] | None = None

    async def get(self) -> KeySet:
        """The current keys, refreshed when their TTL is over."""
        now = self._clock()
        if self._keys is not None and now < self._fetched_at + self._cache_seconds:
            return self._keys
        recently_failed = (
            self._failed_at is not None and now - self._failed_at < self._retry_after_failure
        )
        if self._inflight is not None or not recently_failed:
            try:
                return await self._refresh()
            except JwksFetchError:
                pass
        return self._stale_or_unavailable()

    async def refresh_for_unknown_kid(self) -> KeySet:
        """Refetch because a token named an unknown kid; rate-limited and shared by callers."""
        if self._inflight is None:
            now = self._clock()
            if self._forced_at is not None and now - self._forced_at < self._min_forced_interval:
                logger.info("jwks.forced_refresh_limited")
                return await self.get()
            self._forced_at = now
        try:
            return await self._refresh()
        except JwksFetchError:
            return self._stale_or_unavailable()

    async def aclose(self) -> None:
        """Cancel a fetch under way and close the HTTP client if this cache created it."""
        if self._inflight is not None:
            self._inflight.cancel()
        if self._owns_client:
            await self._client.aclose()

    def _stale_or_unavailable(self) -> KeySet:
        if self._keys is not None:
            expires = self._fetched_at + self._cache_seconds
            if self._clock() < expires + self._stale_seconds:
                return self._keys
        raise ServiceUnavailableError("signing keys are unavailable; try again later")

    async def _refresh(self) -> KeySet:
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight = task
            task.add_done_callback(self._fetch_done)
        # shield: one caller giving up must not cancel the fetch the others wait for.
        return await asyncio.shield(task)

    def _fetch_done(self, task: asyncio.Task[KeySet]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here, so a fetch nobody awaited any more stays quiet

    async def _fetch(self) -> KeySet:
        try:
            keys = parse_jwks(await self._download())
            if not keys.keys:
                raise JwksFetchError("no usable signing keys")
        except (httpx2.HTTPError, JwksFetchError) as exc:
            self._failed_at = self._clock()
            reason = str(exc) if isinstance(exc, JwksFetchError) else type(exc).__name__
            logger.warning("jwks.fetch_failed: %s", reason, extra={"jwks_url": self._url})
            raise JwksFetchError(reason) from None
        self._keys = keys
        self._fetched_at = self._clock()
        self._failed_at = None
        logger.info(
            "jwks.fetched",
            extra={"jwks_url": self._url, "kids": [key.kid for key in keys.keys]},
        )
        return keys

    async def _download(self) -> object:
        headers = {"Accept": "application/json"}
        async with self._client.stream(
            "GET", self._url, headers=headers, timeout=self._timeout
        ) as response:
            if response.status_code != 200:
                raise JwksFetchError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksFetchError("document too large")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise JwksFetchError("not JSON") from None
