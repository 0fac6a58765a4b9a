"""The fake's /v1/audio/transcriptions, driven by the real openai client."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.fake_llm import FakeLLM, Reply


async def test_multipart_form_is_parsed_and_answered(fake: FakeLLM) -> None:
    fake.reset()
    fake.transcription_reply = Reply.text("hello there")
    client = fake.client()
    audio = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    result = await client.audio.transcriptions.create(
        model="whisper-x", file=("clip.webm", audio, "audio/webm"), language="en"
    )
    assert result.text == "hello there"
    [form] = fake.transcription_requests()
    assert (form.audio, form.file_name, form.content_type) == (audio, "clip.webm", "audio/webm")
    assert form.model == "whisper-x" and form.fields["language"] == "en"
    assert fake.model_requests() == []  # not counted as a model request
    text = await client.audio.transcriptions.create(
        model="m", file=("a.ogg", b"x", "audio/ogg"), response_format="text"
    )
    assert text == "hello there"


async def test_errors_and_malformed_forms(fake: FakeLLM) -> None:
    fake.reset()
    client = fake.client()
    fake.transcription_reply = Reply.error(429)
    with pytest.raises(openai.RateLimitError):
        await client.audio.transcriptions.create(model="m", file=("a.webm", b"x", "audio/webm"))
    fake.transcription_reply = None
    with pytest.raises(openai.BadRequestError, match="empty"):
        await client.audio.transcriptions.create(model="m", file=("a.webm", b"", "audio/webm"))
    async with httpx2.AsyncClient(base_url=fake.base_url) as http:
        response = await http.post("/audio/transcriptions", json={"model": "m"})
    assert response.status_code == 400 and "multipart" in response.json()["error"]["message"]
