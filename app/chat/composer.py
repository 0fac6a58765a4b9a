"""What the composer may ask for: a model from the list, a task tool, dictation within a size cap.

The checks run in preflight, so a refusal is a 4xx answer before any stream starts; the
features (model catalog, transcriber, operator instructions) are built once from Settings.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from agents import Model
from chatkit.types import ChatKitReq, InferenceOptions, InputTranscribeParams, InputTranscribeReq

from app.agent.provider import ModelCatalog, ModelChoice
from app.agent.transcription import Transcriber
from app.chat.task_widgets import TASK_TOOLS
from app.errors import BadRequestError, FeatureDisabledError, PayloadTooLargeError
from app.observability.agent_calls import ObservedModel
from app.observability.metrics import Metrics
from app.settings import Settings

DICTATION_DISABLED_MESSAGE = (
    "Dictation is not enabled on this server: it needs an OpenAI-compatible speech-to-text "
    "service. Set OPENAI_API_KEY (and OPENAI_BASE_URL for a server other than OpenAI's) and "
    "restart the server; OPENAI_TRANSCRIBE_MODEL picks the transcription model."
)
MAX_MIME_TYPE_CHARS = 200


@dataclass(frozen=True, slots=True)
class ComposerPolicy:
    """The composer options this server accepts (from Settings)."""

    models: tuple[str, ...]
    dictation: bool
    transcribe_max_bytes: int


def composer_policy(settings: Settings) -> ComposerPolicy:
    return ComposerPolicy(
        models=settings.allowed_models,
        dictation=settings.dictation_enabled,
        transcribe_max_bytes=settings.transcribe_max_bytes,
    )


def check_inference_options(options: InferenceOptions, policy: ComposerPolicy) -> None:
    """A picked model must be one of the listed ones, a forced tool one of the task tools."""
    if options.model is not None and options.model not in policy.models:
        raise BadRequestError(
            "That model is not available here; choose one of: " + ", ".join(policy.models) + "."
        )
    if options.tool_choice is not None and options.tool_choice.id not in TASK_TOOLS:
        raise BadRequestError(
            "Unknown tool; the tools you can choose are: " + ", ".join(TASK_TOOLS) + "."
        )


def decoded_audio_size(audio_base64: str) -> int:
    """The size of the audio once decoded (without decoding it)."""
    length = len(audio_base64)
    return length * 3 // 4 - audio_base64[-2:].count("=") if length else 0


def check_transcription(params: InputTranscribeParams, policy: ComposerPolicy) -> None:
    """Dictation is on, the audio is base64 of at most the cap, and declared as audio."""
    if not policy.dictation:
        raise FeatureDisabledError(DICTATION_DISABLED_MESSAGE)
    mime_type = params.mime_type.strip().lower()
    if len(mime_type) > MAX_MIME_TYPE_CHARS or not mime_type.startswith("audio/"):
        raise BadRequestError("mime_type must be an audio type such as audio/webm.")
    if decoded_audio_size(params.audio_base64) > policy.transcribe_max_bytes:
        raise PayloadTooLargeError(
            f"The recording is too large: at most {policy.transcribe_max_bytes} bytes."
        )
    try:
        audio = base64.b64decode(params.audio_base64, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("audio_base64 is not valid base64.") from None
    if not audio:
        raise BadRequestError("The recording is empty.")


@dataclass(frozen=True, slots=True)
class ComposerFeatures:
    """What a turn may use beyond the default model: picked models, dictation, operator text."""

    models: ModelCatalog | None = None
    transcriber: Transcriber | None = None
    agent_instructions: str | None = None


def composer_features(
    settings: Settings, choice: ModelChoice, *, metrics: Metrics | None = None
) -> ComposerFeatures:
    """The features the settings turn on, sharing the model client of `choice`."""

    def observed(model: Model, name: str) -> Model:
        return ObservedModel(
            model, api=choice.api, system=choice.provider, model_name=name, metrics=metrics
        )

    transcriber = None
    if settings.dictation_enabled and choice.client is not None:
        transcriber = Transcriber(choice.client, model=settings.openai_transcribe_model.strip())
    return ComposerFeatures(
        models=ModelCatalog(choice, allowed=settings.allowed_models, wrap=observed),
        transcriber=transcriber,
        agent_instructions=settings.agent_instructions,
    )


# A transcription request is JSON around the base64 audio: room for the envelope.
TRANSCRIBE_ENVELOPE_BYTES = 4096


def chatkit_body_limit(settings: Settings) -> int:
    """The largest ChatKit request body read: MAX_BODY_BYTES, or a capped recording in base64."""
    if not settings.dictation_enabled:
        return settings.max_body_bytes
    recording = (settings.transcribe_max_bytes + 2) // 3 * 4 + TRANSCRIBE_ENVELOPE_BYTES
    return max(settings.max_body_bytes, recording)


def check_body_size(request: ChatKitReq, size: int, settings: Settings) -> None:
    """Only a recording may be larger than MAX_BODY_BYTES."""
    if size > settings.max_body_bytes and not isinstance(request, InputTranscribeReq):
        raise PayloadTooLargeError(
            f"The request body is larger than {settings.max_body_bytes} bytes."
        )
