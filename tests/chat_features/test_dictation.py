"""Dictation: input.transcribe goes to the model server's /audio/transcriptions as multipart."""

from __future__ import annotations

import base64
import os

from tests.chat_features.conftest import (
    MAX_BODY_BYTES,
    TRANSCRIBE_MAX_BYTES,
    TRANSCRIBE_MODEL,
    tag_input,
    text_part,
)
from tests.e2e.harness import InProcessServer
from tests.fake_llm import FakeLLM, Reply
from tests.server_fixtures import ClientFactory


def recording(size: int) -> bytes:
    return os.urandom(size)


async def test_transcribe_sends_the_audio_and_returns_the_text(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    fake.transcription_reply = Reply.text("buy oat milk tomorrow")
    audio = recording(3000)
    params = {
        "audio_base64": base64.b64encode(audio).decode(),
        "mime_type": "audio/ogg;codecs=opus",
    }
    assert await client.call("input.transcribe", params) == {"text": "buy oat milk tomorrow"}
    [form] = fake.transcription_requests()
    assert form.audio == audio
    assert form.model == TRANSCRIBE_MODEL
    assert (form.file_name, form.content_type) == ("dictation.ogg", "audio/ogg")
    # Bearer tokens of this server never go to the model server.
    [request] = [r for r in fake.requests if r.path == "/v1/audio/transcriptions"]
    assert client.token not in request.headers.get("authorization", "")
    assert client.token not in features_server.logs()


async def test_recordings_larger_than_the_body_cap_but_within_the_transcribe_cap(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    audio = recording(MAX_BODY_BYTES + 10_000)  # base64 is larger still
    params = {"audio_base64": base64.b64encode(audio).decode(), "mime_type": "audio/webm"}
    assert await client.call("input.transcribe", params) == {"text": "fake transcript"}
    assert fake.transcription_requests()[0].audio == audio
    # Any other request that large is still refused.
    big = tag_input(text_part("x" * (MAX_BODY_BYTES + 10)))
    response = await client.request("threads.create", {"input": big})
    assert response.status_code == 413 and response.json()["type"] == "payload_too_large"


async def test_bad_recordings_are_refused_before_the_model_server(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    too_big = base64.b64encode(recording(TRANSCRIBE_MAX_BYTES + 1)).decode()
    cases = [
        ({"audio_base64": too_big, "mime_type": "audio/webm"}, 413, "payload_too_large"),
        ({"audio_base64": "@@not-base64@@", "mime_type": "audio/webm"}, 400, "bad_request"),
        ({"audio_base64": "", "mime_type": "audio/webm"}, 400, "bad_request"),
        ({"audio_base64": "AAAA", "mime_type": "text/html"}, 400, "bad_request"),
        ({"audio_base64": "AAAA"}, 400, "bad_request"),
    ]
    for params, status, error_type in cases:
        response = await client.request("input.transcribe", params)
        assert response.status_code == status, (params.get("mime_type"), response.text)
        assert response.json()["type"] == error_type
    assert fake.transcription_requests() == []


async def test_model_server_failures_are_readable(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    params = {"audio_base64": "AAAA", "mime_type": "audio/webm"}
    fake.transcription_reply = Reply.error(500)
    failed = await client.request("input.transcribe", params)
    assert failed.status_code == 503 and "speech service" in failed.json()["message"]
    fake.transcription_reply = Reply.error(400, "Audio file might be corrupted")
    refused = await client.request("input.transcribe", params)
    assert refused.status_code == 400
    assert refused.json()["message"] == "The speech service could not transcribe this recording."
    fake.transcription_reply = Reply.error(404)
    missing = await client.request("input.transcribe", params)
    assert missing.status_code == 503 and "OPENAI_TRANSCRIBE_MODEL" in missing.json()["message"]


async def test_offline_mode_says_how_to_enable_dictation(
    offline_server: InProcessServer, make_client: ClientFactory
) -> None:
    client = make_client(offline_server.base_url)
    params = {"audio_base64": "AAAA", "mime_type": "audio/webm"}
    response = await client.request("input.transcribe", params)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "feature_not_enabled"
    assert "OPENAI_API_KEY" in body["message"] and "OPENAI_BASE_URL" in body["message"]
