"""Tokens from a real Better Auth server (`jwt` plugin) against our verifier and a real server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import AuthenticationError
from tests.better_auth.conftest import IssuerPool, VerifierFactory
from tests.better_auth.issuer import (
    COOKIE_CACHE_AUDIENCE,
    COOKIE_CACHE_TYPE,
    Account,
    BetterAuthIssuer,
    IssuerConfig,
)
from tests.e2e.harness import ChatKitClient, InProcessServer

API_AUDIENCE = "https://api.example.test"
AUTH_ISSUER = "https://auth.example.test"
DEFAULT_LIFETIME_SECONDS = 15 * 60

# One node process serves every issuer of the session: its tests share a worker under xdist.
pytestmark = pytest.mark.xdist_group("tests/better_auth/test_better_auth_interop.py")


@pytest.fixture(scope="module")
async def shared_account(better_auth: BetterAuthIssuer) -> Account:
    """A user of the default issuer for tests that only read (tokens are stateless)."""
    return await better_auth.create_account("Shared")


def header_of(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def verify_with_jwks(issuer: BetterAuthIssuer, token: str) -> dict[str, Any]:
    """Check the signature against the issuer's published key only (no claim checks)."""
    header = header_of(token)
    document = await issuer.jwks()
    [jwk] = [key for key in document["keys"] if key["kid"] == header["kid"]]
    key = jwt.PyJWK(jwk, algorithm=header["alg"])
    return jwt.decode(
        token, key, algorithms=[header["alg"]], options={"verify_aud": False, "verify_iss": False}
    )


# --- tokens against JwksVerifier ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "ES512", "RS256", "PS256"])
async def test_access_token_is_accepted(
    issuers: IssuerPool, make_verifier: VerifierFactory, algorithm: str
) -> None:
    issuer = issuers.shared(IssuerConfig(algorithm=algorithm))
    account = await issuer.create_account()
    token = await issuer.access_token(account)

    header, claims = header_of(token), claims_of(token)
    assert header["alg"] == algorithm
    assert header["kid"] in {key["kid"] for key in (await issuer.jwks())["keys"]}
    assert claims["iss"] == claims["aud"] == issuer.base_url
    assert claims["exp"] - claims["iat"] == DEFAULT_LIFETIME_SECONDS

    principal = await make_verifier(issuer).verify(token)
    assert principal.user_id == account.user_id
    assert principal.claims["sub"] == account.user_id


async def test_set_auth_jwt_header_token_is_accepted(
    better_auth: BetterAuthIssuer, shared_account: Account, make_verifier: VerifierFactory
) -> None:
    token = await better_auth.session_header_token(shared_account)
    assert (await make_verifier(better_auth).verify(token)).user_id == shared_account.user_id


async def test_token_of_another_algorithm_is_refused(
    better_auth: BetterAuthIssuer, shared_account: Account, make_verifier: VerifierFactory
) -> None:
    token = await better_auth.access_token(shared_account)
    with pytest.raises(AuthenticationError, match="algorithm not allowed"):
        await make_verifier(better_auth, algorithms=["ES256", "RS256"]).verify(token)


async def test_rotated_key_is_accepted_by_the_same_verifier(
    issuers: IssuerPool, make_verifier: VerifierFactory
) -> None:
    issuer = issuers.new()  # its own: rotation must not leak into other tests
    account = await issuer.create_account()
    verifier = make_verifier(issuer)
    before = await issuer.access_token(account)
    assert (await verifier.verify(before)).user_id == account.user_id  # keys now cached

    new_kid = await issuer.rotate_key()
    after = await issuer.access_token(account)
    assert header_of(after)["kid"] == new_kid != header_of(before)["kid"]
    assert {key["kid"] for key in (await issuer.jwks())["keys"]} == {
        header_of(before)["kid"],
        new_kid,
    }

    assert (await verifier.verify(after)).user_id == account.user_id
    # The old key stays published for Better Auth's grace period: its tokens still pass.
    assert (await verifier.verify(before)).user_id == account.user_id


async def test_rotation_interval_of_better_auth_is_followed(
    issuers: IssuerPool, make_verifier: VerifierFactory
) -> None:
    # Better Auth's own rotation (`jwks.rotationInterval`): once the newest key is older than
    # the interval, the next token is signed with a newly created key.
    issuer = issuers.new(IssuerConfig(rotation_seconds=0.5))
    account = await issuer.create_account()
    verifier = make_verifier(issuer)
    before = await issuer.access_token(account)
    assert (await verifier.verify(before)).user_id == account.user_id

    await asyncio.sleep(0.7)
    after = await issuer.access_token(account)
    assert header_of(after)["kid"] != header_of(before)["kid"]
    assert (await verifier.verify(after)).user_id == account.user_id
    assert (await verifier.verify(before)).user_id == account.user_id


async def test_session_cookie_cache_token_is_refused(
    better_auth: BetterAuthIssuer, make_verifier: VerifierFactory
) -> None:
    # Its own account: the cookie cache lives 5 minutes from sign-up.
    account = await better_auth.create_account()
    access = await better_auth.access_token(account)
    cookie = account.session_cookie_cache_token()

    # Same key, same issuer, same subject: only `aud` (and `typ`) tell it apart.
    header, claims = header_of(cookie), claims_of(cookie)
    assert header["typ"] == COOKIE_CACHE_TYPE
    assert header["kid"] == header_of(access)["kid"]
    assert claims["aud"] == COOKIE_CACHE_AUDIENCE
    assert claims["iss"] == better_auth.issuer
    assert claims["sub"] == account.user_id
    assert (await verify_with_jwks(better_auth, cookie))["sub"] == account.user_id

    with pytest.raises(AuthenticationError, match="not an access token"):
        await make_verifier(better_auth).verify(cookie)
    # Refused by its type even where no audience is configured to tell it apart.
    with pytest.raises(AuthenticationError, match="not an access token"):
        await make_verifier(better_auth, audience=None).verify(cookie)
    assert (await make_verifier(better_auth, audience=None).verify(access)).user_id == (
        account.user_id
    )


async def test_token_for_another_audience_is_refused(
    better_auth: BetterAuthIssuer, shared_account: Account, make_verifier: VerifierFactory
) -> None:
    account = shared_account
    other = await better_auth.sign(
        {"sub": account.user_id, "iat": int(time.time()), "aud": "https://other.example.test"}
    )
    assert claims_of(other)["aud"] == "https://other.example.test"
    assert (await verify_with_jwks(better_auth, other))["sub"] == account.user_id
    with pytest.raises(AuthenticationError, match="audience"):
        await make_verifier(better_auth).verify(other)


async def test_configured_issuer_and_audience(
    issuers: IssuerPool, make_verifier: VerifierFactory
) -> None:
    issuer = issuers.shared(IssuerConfig(jwt_issuer=AUTH_ISSUER, jwt_audience=API_AUDIENCE))
    account = await issuer.create_account()
    token = await issuer.access_token(account)
    assert claims_of(token)["iss"] == AUTH_ISSUER
    assert claims_of(token)["aud"] == API_AUDIENCE

    assert (await make_verifier(issuer).verify(token)).user_id == account.user_id
    with pytest.raises(AuthenticationError, match="audience"):
        await make_verifier(issuer, audience=issuer.base_url).verify(token)
    with pytest.raises(AuthenticationError, match="issuer"):
        await make_verifier(issuer, issuer_claim=issuer.base_url).verify(token)


async def test_expired_token_is_refused(
    better_auth: BetterAuthIssuer, shared_account: Account, make_verifier: VerifierFactory
) -> None:
    account = shared_account
    now = int(time.time())
    expired = await better_auth.sign({"sub": account.user_id, "iat": now - 3600, "exp": now - 600})
    with pytest.raises(AuthenticationError, match="expired"):
        await make_verifier(better_auth).verify(expired)


async def test_expiration_longer_than_our_limit_is_refused(
    issuers: IssuerPool, make_verifier: VerifierFactory
) -> None:
    issuer = issuers.shared(IssuerConfig(expiration="2h"))
    account = await issuer.create_account()
    token = await issuer.access_token(account)
    assert claims_of(token)["exp"] - claims_of(token)["iat"] == 7200

    principal = await make_verifier(issuer, auth_max_token_lifetime_seconds=7200).verify(token)
    assert principal.user_id == account.user_id
    with pytest.raises(AuthenticationError, match="lifetime"):
        await make_verifier(issuer, auth_max_token_lifetime_seconds=3600).verify(token)


# --- end to end: the real app on a real uvicorn, over real HTTP ---------------------------------


@pytest.fixture(scope="module")
def better_auth_server(
    better_auth: BetterAuthIssuer, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessServer]:
    """The app trusting the default Better Auth issuer, on Postgres, offline model.

    In this process (a real uvicorn in a thread): what is tested is the token check over HTTP,
    not anything of a process of its own.
    """
    data_dir = tmp_path_factory.mktemp("better-auth-server")
    server = InProcessServer(
        env={
            "DATABASE_URL": postgres_url,
            "AUTH_JWKS_URL": better_auth.jwks_url,
            "AUTH_ISSUER": better_auth.issuer,
            "AUTH_AUDIENCE": better_auth.audience,
            "AUTH_ALGORITHMS": "EdDSA",
            "DATA_DIR": str(data_dir / "data"),
        },
        log_path=data_dir / "server.log",
    )
    server.start()
    yield server
    server.stop()


def forge_with_own_key(token: str) -> str:
    """The same header (kid included) and claims, signed with a key the issuer never had."""
    return jwt.encode(
        claims_of(token),
        ed25519.Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": header_of(token)["kid"]},
    )


def with_subject(token: str, subject: str) -> str:
    """The real signature over a payload edited to name another user."""
    header, _, signature = token.split(".")
    claims = {**claims_of(token), "sub": subject}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


async def test_server_accepts_better_auth_tokens(
    better_auth: BetterAuthIssuer,
    better_auth_server: InProcessServer,
    pg_engine: AsyncEngine,
) -> None:
    alice, bob = await better_auth.create_account("Alice"), await better_auth.create_account("Bob")
    # Alice signs in again (email + password): a token of that new session, as a client's.
    signed_in = await better_auth.sign_in(alice)
    assert signed_in.user_id == alice.user_id
    assert signed_in.cookies != alice.cookies
    alice_chat = ChatKitClient(
        better_auth_server.base_url, await better_auth.access_token(signed_in)
    )
    bob_chat = ChatKitClient(better_auth_server.base_url, await better_auth.access_token(bob))
    try:
        result = await alice_chat.send("hello from better auth")
        assert result.status == 200
        assert "offline demo model" in result.assistant_text()
        thread_id = result.thread_id

        listed = await alice_chat.call("threads.list", {"limit": 50})
        assert [thread["id"] for thread in listed["data"]] == [thread_id]
        assert (await bob_chat.call("threads.list", {"limit": 50}))["data"] == []
        assert (
            await bob_chat.request("threads.get_by_id", {"thread_id": thread_id})
        ).status_code == 404
    finally:
        await alice_chat.aclose()
        await bob_chat.aclose()

    async with pg_engine.connect() as conn:
        owner = await conn.scalar(
            text("select user_id from chat_threads where id = :t"), {"t": thread_id}
        )
    assert owner == alice.user_id


async def test_server_refuses_bad_better_auth_tokens(
    better_auth: BetterAuthIssuer, shared_account: Account, better_auth_server: InProcessServer
) -> None:
    # Alice's own account (the cookie cache lives 5 minutes from sign-up); Bob only lends his id.
    alice, bob = await better_auth.create_account("Alice"), shared_account
    good = await better_auth.access_token(alice)
    now = int(time.time())
    # (case, token, the reason the server gives): each must fail for its own reason.
    bad = [
        (
            "expired",
            await better_auth.sign({"sub": alice.user_id, "iat": now - 3600, "exp": now - 600}),
            "token expired",
        ),
        ("signed with another key", forge_with_own_key(good), "invalid signature"),
        ("subject edited", with_subject(good, bob.user_id), "invalid signature"),
        (
            "another audience",
            await better_auth.sign(
                {"sub": alice.user_id, "iat": now, "aud": "https://other.example.test"}
            ),
            "invalid token audience",
        ),
        (
            "session cookie cache",
            alice.session_cookie_cache_token(),
            "not an access token",
        ),
    ]
    for case, token, reason in bad:
        client = ChatKitClient(better_auth_server.base_url, token)
        try:
            response = await client.request("threads.list", {"limit": 10})
        finally:
            await client.aclose()
        assert response.status_code == 401, case
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"', case
        assert response.json()["type"] == "invalid_token", case
        assert response.json()["message"] == reason, case

    client = ChatKitClient(better_auth_server.base_url, good)
    try:
        assert (await client.request("threads.list", {"limit": 10})).status_code == 200
    finally:
        await client.aclose()


def test_package_lock_records_no_registry_address() -> None:
    lock = json.loads((Path(__file__).parent / "package-lock.json").read_text())
    packages = lock["packages"].values()
    assert not [entry["resolved"] for entry in packages if "resolved" in entry]
    assert all(entry.get("integrity") for name, entry in lock["packages"].items() if name)
