"""`python -m app.auth.token USER [--ttl SECONDS]`: print a development token for USER."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.auth.local_secret import ensure_local_secret
from app.auth.shared_secret import SharedSecretVerifier
from app.settings import SettingsError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Print one signed token on stdout; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m app.auth.token",
        description="Mint a bearer token in shared-secret or local-secret mode.",
    )
    parser.add_argument("user", help="the user id to put in `sub`")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if settings.auth_jwks_url:
        print(
            "AUTH_JWKS_URL is set: tokens come from the identity provider "
            "(e.g. Better Auth's /api/auth/token), not from this command.",
            file=sys.stderr,
        )
        return 2
    user = args.user.strip()
    if not user:
        print("USER must not be empty", file=sys.stderr)
        return 2
    if not 0 < args.ttl <= settings.auth_max_token_lifetime_seconds:
        limit = settings.auth_max_token_lifetime_seconds
        print(
            f"--ttl must be between 1 and {limit} (AUTH_MAX_TOKEN_LIFETIME_SECONDS)",
            file=sys.stderr,
        )
        return 2

    if settings.auth_jwt_secret is not None:
        secret = settings.auth_jwt_secret.get_secret_value()
    else:
        secret = ensure_local_secret(settings.data_dir)
    minter = SharedSecretVerifier(
        secret, issuer=settings.auth_issuer, audience=settings.auth_audience
    )
    print(minter.mint(user, ttl_seconds=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
