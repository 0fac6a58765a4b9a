"""JWKS mode against a real JWKS server: algorithms, rotation, outages, single flight."""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.auth.jwks import JwksCache, parse_jwks
from app.auth.jwks_verifier import JwksVerifier
from app.errors import AuthenticationError, ServiceUnavailableError
from tests.auth.conftest import (
    ALL_ALGORITHMS,
    AUDIENCE,
    DROP,
    ISSUER,
    FakeClock,
    IssuerKey,
    JwksEndpoint,
    MakeVerifier,
    claims,
    new_key,
    unused_port,
)


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
async def test_accepts_a_valid_token_of_each_algorithm(
    alg: str, keys: dict[str, IssuerKey], make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    principal = await verifier.verify(keys[alg].sign(claims(sub=f"user-{alg}")))
    assert principal.user_id == f"user-{alg}"
    assert principal.claims["iss"] == ISSUER


async def test_accepts_audience_lists_and_tokens_without_iss_checks(
    keys: dict[str, IssuerKey], make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(issuer=None)
    token = keys["EdDSA"].sign(claims(aud=["other", AUDIENCE], iss="anyone"))
    assert (await verifier.verify(token)).user_id == "alice"


async def test_rejects_an_algorithm_outside_the_allow_list(
    keys: dict[str, IssuerKey], make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(algorithms=("EdDSA",))
    assert (await verifier.verify(keys["EdDSA"].sign(claims()))).user_id == "alice"
    with pytest.raises(AuthenticationError, match="algorithm not allowed"):
        await verifier.verify(keys["RS256"].sign(claims()))


@pytest.mark.parametrize("algorithms", [("HS256",), ("none",), ("EdDSA", "HS512"), ()])
def test_refuses_symmetric_or_empty_algorithm_configuration(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        JwksVerifier(JwksCache("http://127.0.0.1:9/jwks"), algorithms=algorithms)


async def test_rotated_key_is_accepted_at_once_without_a_new_verifier(
    keys: dict[str, IssuerKey], jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    await verifier.verify(keys["EdDSA"].sign(claims()))
    assert jwks.hits == 1

    rotated = new_key("EdDSA")
    jwks.publish(*keys.values(), rotated)
    principal = await verifier.verify(rotated.sign(claims(sub="bob")))

    assert principal.user_id == "bob"
    assert jwks.hits == 2
    # The new key is now cached: no further fetch.
    await verifier.verify(rotated.sign(claims()))
    assert jwks.hits == 2


async def test_rotation_replacing_every_key_is_accepted_at_once(
    keys: dict[str, IssuerKey], jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    await verifier.verify(keys["ES256"].sign(claims()))
    rotated = new_key("ES256")
    jwks.publish(rotated)
    assert (await verifier.verify(rotated.sign(claims()))).user_id == "alice"


async def test_unknown_kid_from_an_attacker_key_is_rejected(
    attacker_key: IssuerKey, jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    with pytest.raises(AuthenticationError, match="unknown signing key"):
        await verifier.verify(attacker_key.sign(claims()))
    # One cold fetch, then one forced refresh for the unknown kid.
    assert jwks.hits == 2


async def test_sprayed_unknown_kids_force_at_most_one_refresh_per_interval(
    keys: dict[str, IssuerKey],
    attacker_key: IssuerKey,
    jwks: JwksEndpoint,
    make_verifier: MakeVerifier,
    clock: FakeClock,
) -> None:
    verifier = make_verifier(clock=clock)
    await verifier.verify(keys["EdDSA"].sign(claims()))
    for _ in range(20):
        token = attacker_key.sign(claims(), kid=uuid.uuid4().hex)
        with pytest.raises(AuthenticationError):
            await verifier.verify(token)
    assert jwks.hits == 2

    clock.advance(2.5)
    with pytest.raises(AuthenticationError):
        await verifier.verify(attacker_key.sign(claims(), kid=uuid.uuid4().hex))
    assert jwks.hits == 3


async def test_concurrent_unknown_kids_share_one_fetch(
    keys: dict[str, IssuerKey], jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    await verifier.verify(keys["EdDSA"].sign(claims()))
    rotated = new_key("EdDSA")
    jwks.publish(*keys.values(), rotated)
    jwks.slow(0.2)

    tokens = [rotated.sign(claims(sub=f"user-{i}")) for i in range(50)]
    principals = await asyncio.gather(*(verifier.verify(token) for token in tokens))

    assert [p.user_id for p in principals] == [f"user-{i}" for i in range(50)]
    assert jwks.hits == 2


async def test_concurrent_cold_start_shares_one_fetch(
    keys: dict[str, IssuerKey], jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    jwks.slow(0.2)
    token = keys["PS256"].sign(claims())
    principals = await asyncio.gather(*(verifier.verify(token) for _ in range(30)))
    assert {p.user_id for p in principals} == {"alice"}
    assert jwks.hits == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    keys: dict[str, IssuerKey], jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    jwks.slow(0.3)
    token = keys["EdDSA"].sign(claims())
    first = asyncio.create_task(verifier.verify(token))
    second = asyncio.create_task(verifier.verify(token))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second).user_id == "alice"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert jwks.hits == 1


async def test_warm_cache_keeps_serving_while_the_endpoint_is_down(
    keys: dict[str, IssuerKey],
    jwks: JwksEndpoint,
    make_verifier: MakeVerifier,
    clock: FakeClock,
) -> None:
    verifier = make_verifier(clock=clock, cache_seconds=60, stale_seconds=600)
    token = keys["EdDSA"].sign(claims())
    await verifier.verify(token)
    jwks.fail()

    clock.advance(30)  # fresh: no fetch at all
    assert (await verifier.verify(token)).user_id == "alice"
    assert jwks.hits == 1

    clock.advance(60)  # expired but within the stale window: the refetch fails, keys serve
    assert (await verifier.verify(token)).user_id == "alice"
    assert jwks.hits == 2

    clock.advance(600)  # past the stale window
    with pytest.raises(ServiceUnavailableError):
        await verifier.verify(token)

    jwks.recover()
    clock.advance(5)
    assert (await verifier.verify(token)).user_id == "alice"


async def test_unknown_kid_while_the_endpoint_is_down_is_a_401_with_a_warm_cache(
    keys: dict[str, IssuerKey],
    attacker_key: IssuerKey,
    jwks: JwksEndpoint,
    make_verifier: MakeVerifier,
) -> None:
    verifier = make_verifier()
    await verifier.verify(keys["EdDSA"].sign(claims()))
    jwks.fail()
    with pytest.raises(AuthenticationError):
        await verifier.verify(attacker_key.sign(claims()))
    assert (await verifier.verify(keys["EdDSA"].sign(claims()))).user_id == "alice"


@pytest.mark.parametrize("status", [500, 503, 404, 302])
async def test_cold_cache_with_a_failing_endpoint_is_a_503(
    status: int, keys: dict[str, IssuerKey], jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    jwks.fail(status)
    verifier = make_verifier()
    with pytest.raises(ServiceUnavailableError):
        await verifier.verify(keys["EdDSA"].sign(claims()))


async def test_cold_cache_with_nothing_listening_is_a_503(
    keys: dict[str, IssuerKey], make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(url=f"http://127.0.0.1:{unused_port()}/jwks")
    with pytest.raises(ServiceUnavailableError):
        await verifier.verify(keys["EdDSA"].sign(claims()))


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        {"keys": "nope"},
        {"keys": []},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
    ],
    ids=["not-json", "array", "keys-not-list", "no-keys", "only-symmetric"],
)
async def test_cold_cache_with_an_unusable_document_is_a_503(
    document: object, keys: dict[str, IssuerKey], jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    jwks.serve_raw(document)
    verifier = make_verifier()
    with pytest.raises(ServiceUnavailableError):
        await verifier.verify(keys["EdDSA"].sign(claims()))


async def test_failed_fetches_back_off_instead_of_hammering_the_issuer(
    keys: dict[str, IssuerKey],
    jwks: JwksEndpoint,
    make_verifier: MakeVerifier,
    clock: FakeClock,
) -> None:
    jwks.fail()
    verifier = make_verifier(clock=clock)
    token = keys["EdDSA"].sign(claims())
    for _ in range(10):
        with pytest.raises(ServiceUnavailableError):
            await verifier.verify(token)
    assert jwks.hits == 1

    jwks.recover()
    clock.advance(2.5)
    assert (await verifier.verify(token)).user_id == "alice"
    assert jwks.hits == 2


async def test_ttl_refresh_drops_a_revoked_key(
    keys: dict[str, IssuerKey],
    jwks: JwksEndpoint,
    make_verifier: MakeVerifier,
    clock: FakeClock,
) -> None:
    verifier = make_verifier(clock=clock, cache_seconds=60)
    token = keys["RS256"].sign(claims())
    await verifier.verify(token)
    jwks.publish(keys["EdDSA"])
    clock.advance(61)
    with pytest.raises(AuthenticationError, match="unknown signing key"):
        await verifier.verify(token)


async def test_a_token_without_kid_needs_exactly_one_fitting_key(
    keys: dict[str, IssuerKey], jwks: JwksEndpoint, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    token = keys["EdDSA"].sign(claims(), kid=DROP)
    assert (await verifier.verify(token)).user_id == "alice"

    second = new_key("EdDSA")
    other = make_verifier()
    jwks.publish(*keys.values(), second)
    with pytest.raises(AuthenticationError, match="no key id"):
        await other.verify(token)


def test_parse_jwks_keeps_only_usable_signature_keys(
    keys: dict[str, IssuerKey], caplog: pytest.LogCaptureFixture
) -> None:
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    private_jwk = RSAAlgorithm.to_jwk(
        rsa.generate_private_key(public_exponent=65537, key_size=2048), as_dict=True
    )
    document = {
        "keys": [
            keys["EdDSA"].public_jwk(),
            keys["RS256"].public_jwk(alg=None, kid="rsa-no-alg"),
            keys["ES256"].public_jwk(use="enc", kid="enc-key"),
            keys["ES256"].public_jwk(key_ops=["encrypt"], kid="enc-ops"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**private_jwk, "kid": "private"},
            {**RSAAlgorithm.to_jwk(weak_rsa.public_key(), as_dict=True), "kid": "weak"},
            {**ECAlgorithm.to_jwk(p384.public_key(), as_dict=True), "kid": "p384"},
            keys["ES256"].public_jwk(alg="RS256", kid="alg-mismatch"),
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "broken"},
            {"kty": "RSA", "kid": "no-modulus"},
            {"kid": "no-kty"},
            keys["ES512"].public_jwk(kid=42),
            "not a key",
        ]
    }
    with caplog.at_level(logging.WARNING, logger="app.auth.jwks"):
        parsed = parse_jwks(document)
    assert [key.kid for key in parsed.keys] == [keys["EdDSA"].kid, "rsa-no-alg"]
    assert parsed.keys[1].fits("RS256") and parsed.keys[1].fits("PS256")
    assert not parsed.keys[0].fits("ES256")
    skipped = {getattr(record, "kid", None) for record in caplog.records}
    assert {"hmac", "private", "weak", "p384", "alg-mismatch", "broken"} <= skipped
    assert "enc-key" not in skipped  # encryption keys are ignored quietly


async def test_a_shared_http_client_is_used_and_left_open(
    keys: dict[str, IssuerKey], jwks: JwksEndpoint
) -> None:
    async with httpx2.AsyncClient() as client:
        verifier = JwksVerifier(JwksCache(jwks.url, client=client), algorithms=["EdDSA"])
        assert (await verifier.verify(keys["EdDSA"].sign(claims()))).user_id == "alice"
        await verifier.aclose()
        assert not client.is_closed
