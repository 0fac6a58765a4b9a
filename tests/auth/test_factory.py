"""Settings -> verifier: the three auth modes and the startup description."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from app.auth.factory import build_verifier, describe_auth_mode
from app.auth.jwks_verifier import JwksVerifier
from app.auth.local_secret import ensure_local_secret
from app.auth.shared_secret import SharedSecretVerifier
from app.settings import Settings
from tests.auth.conftest import AUDIENCE, ISSUER, IssuerKey, JwksEndpoint, claims

SECRET = "f" * 48


def settings(tmp_path: Path, **values: Any) -> Settings:
    # _env_file=None: the tests must not depend on a developer's `.env`.
    return Settings(_env_file=None, data_dir=tmp_path / "data", **values)


async def test_jwks_mode(tmp_path: Path, jwks: JwksEndpoint, keys: dict[str, IssuerKey]) -> None:
    config = settings(
        tmp_path,
        auth_jwks_url=jwks.url,
        auth_issuer=ISSUER,
        auth_audience=AUDIENCE,
        auth_algorithms=["EdDSA", "ES256"],
    )
    verifier = build_verifier(config)
    try:
        assert isinstance(verifier, JwksVerifier)
        assert (await verifier.verify(keys["ES256"].sign(claims()))).user_id == "alice"
    finally:
        await verifier.aclose()
    assert not (tmp_path / "data").exists()  # no local secret in JWKS mode


async def test_jwks_mode_without_audience_warns(
    tmp_path: Path, jwks: JwksEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.auth.factory"):
        verifier = build_verifier(settings(tmp_path, auth_jwks_url=jwks.url))
    await verifier.aclose()
    assert "AUTH_AUDIENCE" in caplog.text


async def test_shared_secret_mode(tmp_path: Path) -> None:
    verifier = build_verifier(settings(tmp_path, auth_jwt_secret=SECRET, auth_audience="aud"))
    assert isinstance(verifier, SharedSecretVerifier)
    token = SharedSecretVerifier(SECRET, audience="aud").mint("alice")
    assert (await verifier.verify(token)).user_id == "alice"
    assert not (tmp_path / "data").exists()


async def test_local_secret_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.auth.factory"):
        verifier = build_verifier(settings(tmp_path))
    secret = ensure_local_secret(tmp_path / "data")
    assert (await verifier.verify(SharedSecretVerifier(secret).mint("alice"))).user_id == "alice"
    assert "make token USER=<name>" in caplog.text
    assert secret not in caplog.text


def test_describe_auth_mode_names_the_mode_without_secrets(tmp_path: Path) -> None:
    jwks = describe_auth_mode(
        settings(tmp_path, auth_jwks_url="https://user:pw@auth.test/api/auth/jwks?x=1")
    )
    assert jwks.startswith("jwks url=https://auth.test/api/auth/jwks ")
    assert "pw" not in jwks and "audience=unchecked" in jwks

    shared = describe_auth_mode(settings(tmp_path, auth_jwt_secret=SECRET, auth_issuer="iss"))
    assert shared.startswith("shared-secret") and "issuer=iss" in shared
    assert SECRET not in shared

    local = describe_auth_mode(settings(tmp_path))
    assert local.startswith("local-secret") and "make token USER=<name>" in local
