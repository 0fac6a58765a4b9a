"""Short-lived signed links to an image attachment, loadable without a bearer token.

The ChatKit UI runs in an iframe on another origin and loads previews with a plain image
request, which cannot carry the user's token. A link names one attachment and an expiry, signed
with HMAC-SHA256 under a random key kept in the database (`signing_keys`), so every process and
machine issues and accepts the same links and a restart does not break them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

PREVIEW_KEY_NAME = "attachment-previews"
PREVIEW_SECONDS = 3600
# Expiries are rounded up to this step, so a link stays the same (and cached) for a while.
EXPIRY_STEP_SECONDS = 600


def preview_path(attachment_id: str) -> str:
    return f"/api/chatkit/attachments/{quote(attachment_id, safe='')}/preview"


class PreviewLinks:
    """Issues and checks signed preview links; the key is read once, on first use."""

    def __init__(
        self, load_key: Callable[[], Awaitable[bytes]], *, lifetime: int = PREVIEW_SECONDS
    ) -> None:
        self._load_key = load_key
        self._key: bytes | None = None
        self._lock = asyncio.Lock()
        self.lifetime = lifetime

    async def _signing_key(self) -> bytes:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await self._load_key()
        return self._key

    def _signature(self, key: bytes, attachment_id: str, expires: int) -> str:
        message = f"preview\n{attachment_id}\n{expires}".encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    async def url(self, attachment_id: str, base_url: str, *, now: float | None = None) -> str:
        """An absolute link to the attachment's preview, valid for about `lifetime` seconds."""
        now = time.time() if now is None else now
        expires = (int(now + self.lifetime) // EXPIRY_STEP_SECONDS + 1) * EXPIRY_STEP_SECONDS
        signature = self._signature(await self._signing_key(), attachment_id, expires)
        return f"{base_url}{preview_path(attachment_id)}?exp={expires}&sig={signature}"

    async def verify(
        self, attachment_id: str, expires: int, signature: str, *, now: float | None = None
    ) -> bool:
        """Whether the link was issued by this server for this attachment and has not expired."""
        now = time.time() if now is None else now
        if expires < now or expires > now + self.lifetime + EXPIRY_STEP_SECONDS:
            return False
        expected = self._signature(await self._signing_key(), attachment_id, expires)
        return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
