"""Shared-secret (HS256) mode: minting, verifying, and the claim rules it shares with JWKS mode."""

from __future__ import annotations

import time

import jwt
import pytest

from app.auth.shared_secret import SharedSecretVerifier
from app.errors import AuthenticationError
from tests.auth.conftest import compact

SECRET = "k" * 48


async def test_a_minted_token_verifies() -> None:
    verifier = SharedSecretVerifier(SECRET, issuer="iss", audience="aud")
    principal = await verifier.verify(verifier.mint("alice", ttl_seconds=60, role="x"))
    assert principal.user_id == "alice"
    assert principal.claims["iss"] == "iss"
    assert principal.claims["aud"] == "aud"
    assert principal.claims["role"] == "x"
    assert principal.claims["exp"] - principal.claims["iat"] == 60


async def test_wrong_secret_is_refused() -> None:
    token = SharedSecretVerifier("w" * 48).mint("alice")
    with pytest.raises(AuthenticationError, match="invalid signature"):
        await SharedSecretVerifier(SECRET).verify(token)


async def test_hs512_is_refused_even_with_the_right_secret() -> None:
    secret = SECRET + SECRET  # long enough for HS512
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "iat": now, "exp": now + 60}, secret, algorithm="HS512")
    with pytest.raises(AuthenticationError, match="algorithm not allowed"):
        await SharedSecretVerifier(secret).verify(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(alg: str) -> None:
    claims = jwt.decode(
        SharedSecretVerifier(SECRET).mint("alice"), options={"verify_signature": False}
    )
    token = compact({"alg": alg, "typ": "JWT"}, claims, lambda _: b"")
    with pytest.raises(AuthenticationError):
        await SharedSecretVerifier(SECRET).verify(token)


async def test_issuer_and_audience_are_checked_when_configured() -> None:
    strict = SharedSecretVerifier(SECRET, issuer="iss", audience="aud")
    with pytest.raises(AuthenticationError, match="issuer"):
        await strict.verify(strict.mint("alice", iss="other"))
    with pytest.raises(AuthenticationError, match="audience"):
        await strict.verify(strict.mint("alice", aud="other"))
    with pytest.raises(AuthenticationError, match="audience"):
        await strict.verify(SharedSecretVerifier(SECRET, issuer="iss").mint("alice"))


async def test_the_lifetime_cap_applies() -> None:
    verifier = SharedSecretVerifier(SECRET, max_lifetime_seconds=3600)
    assert (await verifier.verify(verifier.mint("alice", ttl_seconds=3600))).user_id == "alice"
    with pytest.raises(AuthenticationError, match="lifetime"):
        await verifier.verify(verifier.mint("alice", ttl_seconds=3601))


async def test_leeway_tolerates_small_clock_skew() -> None:
    verifier = SharedSecretVerifier(SECRET, leeway_seconds=30)
    skewed = verifier.mint("alice", iat=int(time.time()) + 20)
    assert (await verifier.verify(skewed)).user_id == "alice"


@pytest.mark.parametrize("secret", ["", "   "])
def test_an_empty_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        SharedSecretVerifier(secret)


def test_the_secret_stays_out_of_repr() -> None:
    assert SECRET not in repr(SharedSecretVerifier(SECRET))


@pytest.mark.parametrize(("user", "ttl"), [("", 60), ("  ", 60), ("alice", 0), ("alice", -1)])
def test_mint_refuses_nonsense(user: str, ttl: int) -> None:
    with pytest.raises(ValueError):
        SharedSecretVerifier(SECRET).mint(user, ttl_seconds=ttl)
