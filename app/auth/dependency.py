"""The FastAPI dependency that turns `Authorization: Bearer <token>` into a RequestContext."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import Depends, Request

from app.auth.base import TokenVerifier
from app.auth.jwt_rules import MAX_TOKEN_BYTES
from app.context import RequestContext
from app.errors import AuthenticationError
from app.observability.metrics import Metrics

logger = logging.getLogger(__name__)

# "Bearer " plus the largest token any verifier accepts.
MAX_AUTHORIZATION_CHARS = MAX_TOKEN_BYTES + len("Bearer ")
# The name claim and Accept-Language kept for the instructions (which bound them further).
MAX_CLAIM_CHARS = 512


def bearer_token(request: Request) -> str:
    """The token of the one `Authorization: Bearer` header; no query strings, no cookies."""
    values = request.headers.getlist("authorization")
    if not values:
        raise AuthenticationError("missing bearer token", reason="missing")
    if len(values) > 1:
        raise AuthenticationError("more than one Authorization header", reason="malformed")
    value = values[0]
    if len(value) > MAX_AUTHORIZATION_CHARS:
        raise AuthenticationError("token too large", reason="malformed")
    parts = value.split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        raise AuthenticationError("expected Authorization: Bearer <token>", reason="malformed")
    return parts[1]


async def current_caller(request: Request) -> RequestContext:
    """Verify the bearer token and describe the caller; 401 for any bad token."""
    verifier: TokenVerifier = request.app.state.verifier
    try:
        token = bearer_token(request)
        principal = await verifier.verify(token)
    except AuthenticationError as exc:
        logger.info("auth.rejected", extra={"reason": exc.message})
        metrics: Metrics | None = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.auth_failed(exc.reason)
        raise
    request.state.user_id = principal.user_id
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    exp = principal.claims.get("exp")
    name = principal.claims.get("name")
    return RequestContext(
        user_id=principal.user_id,
        token=token,
        request_id=request_id,
        expires_at=float(exp) if isinstance(exp, int | float) else None,
        display_name=name[:MAX_CLAIM_CHARS] if isinstance(name, str) else None,
        accept_language=request.headers.get("accept-language", "")[:MAX_CLAIM_CHARS] or None,
    )


CurrentCaller = Annotated[RequestContext, Depends(current_caller)]
