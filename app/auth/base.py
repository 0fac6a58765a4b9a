"""What every token verifier promises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: the token's `sub` and its full claim set."""

    user_id: str
    claims: dict[str, Any] = field(repr=False)


class TokenVerifier(Protocol):
    """Verifies a raw bearer token.

    Raises `app.errors.AuthenticationError` (401) for any bad token and
    `app.errors.ServiceUnavailableError` (503) when keys cannot be had.
    """

    async def verify(self, token: str) -> Principal: ...

    async def aclose(self) -> None: ...
