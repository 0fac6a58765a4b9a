"""GET /metrics: Prometheus exposition, behind METRICS_TOKEN when one is set."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from app.api.deps import SettingsDep
from app.errors import AuthenticationError, NotFoundError
from app.observability.metrics import Metrics

router = APIRouter()


def check_scrape_token(request: Request, expected: str) -> None:
    """Refuse (401) a scrape without `Authorization: Bearer <METRICS_TOKEN>`; constant time."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    )
    if not ok:
        raise AuthenticationError("a valid metrics token is required")


@router.get("/metrics")
async def metrics(request: Request, settings: SettingsDep) -> Response:
    collected: Metrics | None = getattr(request.app.state, "metrics", None)
    if collected is None:
        raise NotFoundError("Not found.")
    if settings.metrics_token is not None:
        check_scrape_token(request, settings.metrics_token.get_secret_value())
    body, content_type = collected.render(request.headers.get("accept"))
    return Response(content=body, media_type=content_type)
