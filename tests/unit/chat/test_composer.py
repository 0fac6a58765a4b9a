"""Composer checks (models, tools, dictation, body size) and @-mentions as the model reads them."""

from __future__ import annotations

import base64

import pytest
from chatkit.types import (
    InferenceOptions,
    InputTranscribeParams,
    ThreadsCreateReq,
    ToolChoice,
    UserMessageTagContent,
)

from app.chat.composer import (
    ComposerPolicy,
    chatkit_body_limit,
    check_body_size,
    check_inference_options,
    check_transcription,
    decoded_audio_size,
)
from app.chat.mentions import mention_text, mentioned_task
from app.chat.sdk_seams import REQUEST_ADAPTER
from app.errors import BadRequestError, FeatureDisabledError, PayloadTooLargeError
from app.settings import Settings

POLICY = ComposerPolicy(models=("model-a", "model-b"), dictation=True, transcribe_max_bytes=1000)


def test_inference_options() -> None:
    check_inference_options(InferenceOptions(), POLICY)
    check_inference_options(
        InferenceOptions(model="model-b", tool_choice=ToolChoice(id="list_tasks")), POLICY
    )
    with pytest.raises(BadRequestError, match="model-a, model-b"):
        check_inference_options(InferenceOptions(model="gpt-9"), POLICY)
    with pytest.raises(BadRequestError, match="list_tasks"):
        check_inference_options(InferenceOptions(tool_choice=ToolChoice(id="rm_rf")), POLICY)


def audio(size: int) -> str:
    return base64.b64encode(bytes(range(256)) * (size // 256) + b"x" * (size % 256)).decode()


@pytest.mark.parametrize("size", [1, 2, 3, 4, 999, 1000])
def test_decoded_size_matches(size: int) -> None:
    assert decoded_audio_size(audio(size)) == size
    check_transcription(
        InputTranscribeParams(audio_base64=audio(size), mime_type="audio/webm"), POLICY
    )


@pytest.mark.parametrize(
    ("audio_base64", "mime_type", "error"),
    [
        (audio(1001), "audio/webm", PayloadTooLargeError),
        ("", "audio/webm", BadRequestError),
        ("not base64!", "audio/webm", BadRequestError),
        ("QUJD\nRA==", "audio/webm", BadRequestError),
        (audio(10), "text/plain", BadRequestError),
        (audio(10), "audio/" + "x" * 300, BadRequestError),
    ],
)
def test_bad_recordings(audio_base64: str, mime_type: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_transcription(
            InputTranscribeParams(audio_base64=audio_base64, mime_type=mime_type), POLICY
        )


def test_dictation_off() -> None:
    off = ComposerPolicy(models=("m",), dictation=False, transcribe_max_bytes=1000)
    with pytest.raises(FeatureDisabledError, match="OPENAI_API_KEY"):
        check_transcription(
            InputTranscribeParams(audio_base64=audio(4), mime_type="audio/ogg"), off
        )


def test_only_recordings_may_exceed_the_body_cap() -> None:
    settings = Settings(
        _env_file=None,
        openai_api_key="k",
        max_body_bytes=2048,
        transcribe_max_bytes=30_000,
    )
    assert chatkit_body_limit(settings) >= 40_000
    assert chatkit_body_limit(Settings(_env_file=None, max_body_bytes=2048)) == 2048
    message = REQUEST_ADAPTER.validate_python(
        {
            "type": "threads.create",
            "params": {"input": {"content": [], "attachments": [], "inference_options": {}}},
        }
    )
    assert isinstance(message, ThreadsCreateReq)
    check_body_size(message, 2048, settings)
    with pytest.raises(PayloadTooLargeError):
        check_body_size(message, 2049, settings)
    transcribe = REQUEST_ADAPTER.validate_python(
        {"type": "input.transcribe", "params": {"audio_base64": "", "mime_type": "audio/webm"}}
    )
    check_body_size(transcribe, 40_000, settings)


def tag(**fields: object) -> UserMessageTagContent:
    return UserMessageTagContent.model_validate(
        {"type": "input_tag", "id": "x", "text": "t", "data": {}, **fields}
    )


def test_task_mentions() -> None:
    by_data = tag(id="anything", text="buy milk", data={"task_id": 12, "title": "buy milk"})
    assert mention_text(by_data) == '@buy milk refers to task #12 "buy milk".'
    by_id = tag(id="task:7", text='say "hi"\nnow')
    assert mentioned_task(by_id) == (7, 'say "hi" now')
    assert mention_text(by_id) == '@say "hi"\nnow refers to task #7 "say \\"hi\\" now".'
    assert mentioned_task(tag(id="task:t-3", text="x")) == ("t-3", "x")
    assert mentioned_task(tag(id="task:" + "9" * 5000, text="x")) is None
    assert mentioned_task(tag(id="person:3", text="Bob", data={"email": "b@x"})) is None
    assert mention_text(tag(id="person:3", text="Bob", data={"email": "b@x"})) == (
        '@Bob refers to: {"email": "b@x"}'
    )
