"""Dictation: audio to text through the OpenAI-compatible server's `/audio/transcriptions`."""

from __future__ import annotations

import logging

import openai
from openai import AsyncOpenAI

from app.errors import AppError, BadRequestError, ServiceUnavailableError

logger = logging.getLogger(__name__)

# Servers pick the audio format from the file name, so it needs the right extension.
_EXTENSIONS = {
    "audio/webm": "webm",
    "audio/ogg": "ogg",
    "audio/mp4": "mp4",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/flac": "flac",
}
RETRY_AFTER_SECONDS = 5


def audio_file_name(media_type: str) -> str:
    """A file name whose extension names the format of `media_type` (webm when unknown)."""
    return f"dictation.{_EXTENSIONS.get(media_type.strip().lower(), 'webm')}"


class Transcriber:
    """Turns a recording into text with one transcription model; the client is shared."""

    def __init__(self, client: AsyncOpenAI, *, model: str) -> None:
        self._client = client
        self.model = model

    async def transcribe(self, audio: bytes, media_type: str) -> str:
        """The recording's text; AppErrors a user can read when the service fails."""
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model,
                file=(audio_file_name(media_type), audio, media_type),
                response_format="json",
            )
        except openai.APIError as exc:
            logger.warning(
                "transcribe.failed",
                extra={"error": type(exc).__name__, "status": getattr(exc, "status_code", None)},
            )
            raise transcription_error(exc) from None
        return result.text.strip()


def transcription_error(exc: openai.APIError) -> AppError:
    """What the user is told when the speech service failed."""
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        return BadRequestError("The speech service could not transcribe this recording.")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ServiceUnavailableError(
            "The server's speech service credentials were rejected; ask the operator to check "
            "OPENAI_API_KEY."
        )
    if isinstance(exc, openai.NotFoundError):
        return ServiceUnavailableError(
            "The speech service does not offer the configured transcription model; ask the "
            "operator to check OPENAI_TRANSCRIBE_MODEL."
        )
    if isinstance(exc, openai.APITimeoutError):
        return ServiceUnavailableError(
            "The speech service took too long to answer. Please try again.",
            retry_after=RETRY_AFTER_SECONDS,
        )
    return ServiceUnavailableError(
        "The speech service is unavailable right now. Please try again in a moment.",
        retry_after=RETRY_AFTER_SECONDS,
    )
