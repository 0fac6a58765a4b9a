"""Forged and bad tokens: every one is an AuthenticationError, and a 401 through the dependency."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from app.auth.base import TokenVerifier
from app.auth.dependency import CurrentCaller
from app.auth.jwks_verifier import JwksVerifier
from app.auth.shared_secret import SharedSecretVerifier
from app.errors import AuthenticationError, install_error_handlers
from tests.auth.conftest import (
    DROP,
    ISSUER,
    IssuerKey,
    MakeVerifier,
    b64json,
    b64url,
    claims,
    compact,
    now,
)

# The suite's verifier allows these; PS256 and ES512 are published but not allowed.
SUITE_ALGORITHMS = ("EdDSA", "ES256", "RS256")


@dataclass(frozen=True)
class Keys:
    issuer: dict[str, IssuerKey]
    attacker: IssuerKey


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def rsa_public_pem(key: IssuerKey) -> bytes:
    pem: bytes = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def good(k: Keys) -> str:
    return k.issuer["EdDSA"].sign(claims())


def replace_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def tamper_signature(token: str) -> str:
    signature = token.rsplit(".", 1)[1]
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return replace_segment(token, 2, signature[:middle] + flipped + signature[middle + 1 :])


def alg_none(alg: str, signature: str = "") -> Callable[[Keys], str]:
    def make(k: Keys) -> str:
        return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims())}.{signature}"

    return make


def with_claims(**overrides: Any) -> Callable[[Keys], str]:
    return lambda k: k.issuer["EdDSA"].sign(claims(**overrides))


def made_at(**offsets: int) -> Callable[[Keys], str]:
    """Time claims of `now + offset` seconds, now being when the token is made, not when this
    module was imported: a future `iat` fixed at import is in the past ten minutes into a run."""
    return lambda k: k.issuer["EdDSA"].sign(
        claims(**{name: now() + offset for name, offset in offsets.items()})
    )


TOKEN_CASES: dict[str, Callable[[Keys], str]] = {
    "alg-none": alg_none("none"),
    "alg-None": alg_none("None"),
    "alg-NONE": alg_none("NONE"),
    "alg-none-with-signature": alg_none("none", b64url(b"x" * 32)),
    "alg-missing": lambda k: k.issuer["EdDSA"].sign(claims(), alg=DROP),
    "hs256-keyed-with-rsa-public-pem": lambda k: compact(
        {"alg": "HS256", "typ": "JWT", "kid": k.issuer["RS256"].kid},
        claims(),
        hs256(rsa_public_pem(k.issuer["RS256"])),
    ),
    "hs256-keyed-with-public-jwk-json": lambda k: compact(
        {"alg": "HS256", "typ": "JWT", "kid": k.issuer["RS256"].kid},
        claims(),
        hs256(json.dumps(k.issuer["RS256"].public_jwk()).encode()),
    ),
    "hs256-empty-secret": lambda k: compact(
        {"alg": "HS256", "typ": "JWT", "kid": k.issuer["EdDSA"].kid}, claims(), hs256(b"")
    ),
    "embedded-jwk-header": lambda k: k.attacker.sign(
        claims(), kid=k.issuer["EdDSA"].kid, jwk=k.attacker.public_jwk()
    ),
    "jku-header": lambda k: k.attacker.sign(claims(), jku="https://evil.example/jwks.json"),
    "x5u-header": lambda k: k.attacker.sign(claims(), x5u="https://evil.example/cert.pem"),
    "x5c-header": lambda k: k.issuer["RS256"].sign(claims(), x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOC"]),
    "crit-header": lambda k: k.issuer["EdDSA"].sign(claims(), crit=["exp"]),
    "crit-b64-header": lambda k: k.issuer["EdDSA"].sign(claims(), crit=["b64"], b64=True),
    "kid-not-a-string": lambda k: k.issuer["EdDSA"].sign(claims(), kid=7),
    "tampered-header": lambda k: replace_segment(
        good(k), 0, b64json({"alg": "EdDSA", "typ": "JWT", "kid": k.issuer["EdDSA"].kid, "x": 1})
    ),
    "tampered-payload": lambda k: replace_segment(good(k), 1, b64json(claims(sub="admin"))),
    "tampered-signature": lambda k: tamper_signature(good(k)),
    "signature-of-another-key-under-a-known-kid": lambda k: k.attacker.sign(
        claims(), kid=k.issuer["EdDSA"].kid
    ),
    "two-segments": lambda k: good(k).rsplit(".", 1)[0],
    "four-segments": lambda k: good(k) + ".e30",
    "empty-signature-segment": lambda k: good(k).rsplit(".", 1)[0] + ".",
    "garbage": lambda k: "not-a-token",
    "garbage-three-segments": lambda k: "!!!.@@@.###",
    "non-ascii": lambda k: good(k) + "é",
    "header-not-an-object": lambda k: replace_segment(good(k), 0, b64json(["EdDSA"])),
    "payload-not-json": lambda k: k.issuer["EdDSA"].sign(b"{not json"),  # type: ignore[arg-type]
    "payload-not-an-object": lambda k: k.issuer["EdDSA"].sign(["alice"]),  # type: ignore[arg-type]
    "expired": made_at(iat=-7200, exp=-3600),
    "expired-within-no-leeway": made_at(iat=-600, exp=-31),
    "future-iat": made_at(iat=600, exp=1200),
    "future-nbf": made_at(nbf=600),
    "wrong-iss": with_claims(iss="https://evil.example"),
    "missing-iss": with_claims(iss=DROP),
    "wrong-aud": with_claims(aud="https://other.example"),
    "wrong-aud-list": with_claims(aud=["https://other.example"]),
    "missing-aud": with_claims(aud=DROP),
    "missing-sub": with_claims(sub=DROP),
    "empty-sub": with_claims(sub=""),
    "blank-sub": with_claims(sub="   "),
    "int-sub": with_claims(sub=42),
    "null-sub": with_claims(sub=None),
    "too-long-sub": with_claims(sub="a" * 256),
    "string-exp": with_claims(exp="tomorrow"),
    "bool-exp": with_claims(exp=True),
    "nan-exp": with_claims(exp=float("nan")),
    "null-exp": with_claims(exp=None),
    "missing-exp": with_claims(exp=DROP),
    "missing-iat": with_claims(iat=DROP),
    "string-iat": with_claims(iat="now"),
    "string-nbf": with_claims(nbf="soon"),
    "exp-before-iat": made_at(iat=0, exp=-5),
    "lifetime-too-long": made_at(iat=0, exp=2 * 86_400),
    "oversized": with_claims(pad="x" * 9000),
    "unknown-kid-attacker-key": lambda k: k.attacker.sign(claims()),
    "key-type-mismatch-es256-token-rsa-kid": lambda k: k.issuer["ES256"].sign(
        claims(), kid=k.issuer["RS256"].kid
    ),
    "algorithm-not-allowed-ps256": lambda k: k.issuer["PS256"].sign(claims()),
    "algorithm-not-allowed-es512": lambda k: k.issuer["ES512"].sign(claims()),
    "alg-header-lies-rs256-for-ps256-key": lambda k: k.issuer["PS256"].sign(claims(), alg="RS256"),
}

# Authorization header values the dependency must refuse before any verifier sees them.
HEADER_CASES: dict[str, Callable[[Keys], str | None]] = {
    "no-header": lambda k: None,
    "basic-scheme": lambda k: "Basic YWxpY2U6c2VjcmV0",
    "empty-bearer": lambda k: "Bearer ",
    "bearer-only": lambda k: "Bearer",
    "token-without-scheme": lambda k: good(k),
    "two-spaces": lambda k: "Bearer  " + good(k),
    "two-tokens": lambda k: f"Bearer {good(k)} {good(k)}",
    "oversized-header": lambda k: "Bearer " + "a" * 9000,
}


@pytest.fixture
def forge_keys(keys: dict[str, IssuerKey], attacker_key: IssuerKey) -> Keys:
    return Keys(issuer=keys, attacker=attacker_key)


@pytest.fixture
def suite_verifier(make_verifier: MakeVerifier) -> JwksVerifier:
    return make_verifier(algorithms=SUITE_ALGORITHMS)


def test_the_suite_is_large_enough() -> None:
    assert len(TOKEN_CASES) + len(HEADER_CASES) >= 25


async def test_the_control_token_is_accepted(
    suite_verifier: JwksVerifier, forge_keys: Keys
) -> None:
    assert (await suite_verifier.verify(good(forge_keys))).user_id == "alice"


@pytest.mark.parametrize("case", TOKEN_CASES)
async def test_verifier_refuses(case: str, suite_verifier: JwksVerifier, forge_keys: Keys) -> None:
    token = TOKEN_CASES[case](forge_keys)
    with pytest.raises(AuthenticationError) as caught:
        await suite_verifier.verify(token)
    assert token not in caught.value.message
    assert len(caught.value.message) < 80


TIME_CASES = [c for c in TOKEN_CASES if c.startswith(("expired", "future", "exp-", "lifetime"))]


@pytest.mark.parametrize("case", TIME_CASES)
async def test_time_cases_are_refused_late_in_a_long_run(
    case: str, suite_verifier: JwksVerifier, forge_keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made and checked 700 s after this module was imported, each case is still refused."""
    later = time.time() + 700
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(AuthenticationError):
        await suite_verifier.verify(TOKEN_CASES[case](forge_keys))


def make_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.verifier = verifier

    @app.get("/whoami")
    async def whoami(caller: CurrentCaller) -> dict[str, str]:
        return {"user_id": caller.user_id, "request_id": caller.request_id}

    return app


@pytest.fixture
async def suite_client(suite_verifier: JwksVerifier) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=make_app(suite_verifier))
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def bearer(make: Callable[[Keys], str]) -> Callable[[Keys], str]:
    return lambda k: f"Bearer {make(k)}"


ALL_HEADER_CASES: dict[str, Callable[[Keys], str | None]] = {
    **HEADER_CASES,
    **{name: bearer(make) for name, make in TOKEN_CASES.items()},
}


@pytest.mark.parametrize("case", ALL_HEADER_CASES)
async def test_dependency_answers_401(
    case: str, suite_client: httpx2.AsyncClient, forge_keys: Keys
) -> None:
    value = ALL_HEADER_CASES[case](forge_keys)
    headers = {} if value is None else {b"Authorization": value.encode()}
    response = await suite_client.get("/whoami", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    body = response.json()
    assert set(body) == {"type", "message", "status_code"}
    assert body["type"] == "invalid_token" and body["status_code"] == 401
    if value is not None and len(value) > 20:
        assert value.split(" ")[-1] not in response.text


async def test_dependency_accepts_the_control_token(
    suite_client: httpx2.AsyncClient, forge_keys: Keys
) -> None:
    response = await suite_client.get(
        "/whoami", headers={"Authorization": f"Bearer {good(forge_keys)}"}
    )
    assert response.status_code == 200
    assert response.json()["user_id"] == "alice"


# --- the same rules in shared-secret mode ---------------------------------------------------

SECRET = "s" * 48


def hs_token(payload: dict[str, Any] | bytes, **header: Any) -> str:
    full = {"alg": "HS256", "typ": "JWT", **header}
    full = {name: value for name, value in full.items() if value is not DROP}
    return compact(full, payload, hs256(SECRET.encode()))


SHARED_SECRET_CASES: dict[str, Callable[[], str]] = {
    "alg-none": lambda: f"{b64json({'alg': 'none'})}.{b64json(claims())}.",
    "hs512": lambda: compact(
        {"alg": "HS512"},
        claims(),
        lambda data: hmac.new(SECRET.encode(), data, hashlib.sha512).digest(),
    ),
    "wrong-secret": lambda: compact({"alg": "HS256"}, claims(), hs256(b"w" * 48)),
    "empty-secret": lambda: compact({"alg": "HS256"}, claims(), hs256(b"")),
    "jwk-header": lambda: hs_token(claims(), jwk={"kty": "oct", "k": "c2VjcmV0"}),
    "jku-header": lambda: hs_token(claims(), jku="https://evil.example/jwks"),
    "crit-header": lambda: hs_token(claims(), crit=["exp"]),
    "tampered-payload": lambda: replace_segment(hs_token(claims()), 1, b64json(claims(sub="x"))),
    "expired": lambda: hs_token(claims(iat=now() - 7200, exp=now() - 3600)),
    "future-iat": lambda: hs_token(claims(iat=now() + 600, exp=now() + 1200)),
    "future-nbf": lambda: hs_token(claims(nbf=now() + 600)),
    "wrong-iss": lambda: hs_token(claims(iss="https://evil.example")),
    "wrong-aud": lambda: hs_token(claims(aud="https://other.example")),
    "missing-aud": lambda: hs_token(claims(aud=DROP)),
    "missing-sub": lambda: hs_token(claims(sub=DROP)),
    "int-sub": lambda: hs_token(claims(sub=7)),
    "string-exp": lambda: hs_token(claims(exp="later")),
    "missing-iat": lambda: hs_token(claims(iat=DROP)),
    "lifetime-too-long": lambda: hs_token(claims(iat=now(), exp=now() + 2 * 86_400)),
    "oversized": lambda: hs_token(claims(pad="x" * 9000)),
    "two-segments": lambda: hs_token(claims()).rsplit(".", 1)[0],
    "garbage": lambda: "garbage",
}


@pytest.mark.parametrize("case", SHARED_SECRET_CASES)
async def test_shared_secret_verifier_refuses(case: str) -> None:
    verifier = SharedSecretVerifier(SECRET, issuer=ISSUER, audience=claims()["aud"])
    assert (await verifier.verify(hs_token(claims()))).user_id == "alice"
    with pytest.raises(AuthenticationError):
        await verifier.verify(SHARED_SECRET_CASES[case]())


# --- random input never escapes as another exception type ---------------------------------


def random_tokens(seed: int, count: int, k: Keys) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_.=+/ é\x00{}\"'"
    base = good(k)
    tokens: list[str] = []
    for _ in range(count):
        shape = rng.randrange(4)
        if shape == 0:
            tokens.append("".join(rng.choices(alphabet, k=rng.randrange(0, 200))))
        elif shape == 1:
            chars = list(base)
            for _ in range(rng.randrange(1, 5)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            if "".join(chars) != base:  # a mutation may put back the same character
                tokens.append("".join(chars))
        elif shape == 2:
            header = rng.choice(
                [{"alg": "EdDSA"}, {"alg": 1}, {"alg": "EdDSA", "kid": []}, {}, {"kid": None}]
            )
            payload = rng.choice(
                [
                    {"sub": "a", "exp": 1e308, "iat": -1e308},
                    {"sub": "a", "exp": 10**400, "iat": 0},
                    {"sub": {"a": 1}, "exp": [], "iat": {}},
                    [1, 2, 3],
                    "str",
                    None,
                ]
            )
            tokens.append(f"{b64json(header)}.{b64json(payload)}.{b64url(rng.randbytes(64))}")
        else:
            nested = "[" * rng.randrange(1000, 3000)
            tokens.append(f"{b64url(nested.encode())}.{b64json(claims())}.sig")
    return tokens


async def test_random_input_only_ever_raises_authentication_error(
    suite_verifier: JwksVerifier, forge_keys: Keys
) -> None:
    shared = SharedSecretVerifier(SECRET)
    await suite_verifier.verify(good(forge_keys))  # warm the cache
    for token in random_tokens(seed=1234, count=600, k=forge_keys):
        for verifier in (suite_verifier, shared):
            with pytest.raises(AuthenticationError):
                await verifier.verify(token)
