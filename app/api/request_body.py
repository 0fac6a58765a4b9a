"""Reading a request body with a size cap and a deadline."""

from __future__ import annotations

import anyio
from fastapi import Request

from app.errors import PayloadTooLargeError, RequestTimeoutError


async def read_body(request: Request, limit: int, *, deadline: float | None = None) -> bytes:
    """The body, refused with 413 past `limit` bytes and 408 when it takes over `deadline` s."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(deadline):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(
            f"The request body did not arrive within {deadline:g} seconds."
        ) from None
    return b"".join(chunks)
