"""The fake's speech-to-text endpoint: `POST /v1/audio/transcriptions` (multipart form data).

The form is parsed as a real multipart body (the stdlib's MIME parser): the audio file with its
name and type, the model and the other fields; the answer is what OpenAI sends for
`response_format=json` (or plain text for `text`), or an OpenAI-style error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING

from tests.fake_llm import wire

if TYPE_CHECKING:
    from tests.fake_llm.recorded import RecordedRequest
    from tests.fake_llm.script import Reply

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"


class MalformedForm(ValueError):
    """The body is not the multipart form a transcription request must be."""


@dataclass(frozen=True)
class TranscriptionForm:
    """What a transcription request sent: the audio part and the plain fields."""

    audio: bytes = field(repr=False)
    file_name: str | None
    content_type: str
    fields: dict[str, str]

    @property
    def model(self) -> str | None:
        return self.fields.get("model")


def parse_form(request: RecordedRequest) -> TranscriptionForm:
    """Parse the multipart body of `request`; MalformedForm when it is not one."""
    content_type = request.headers.get("content-type", "")
    if (
        not content_type.lower().startswith("multipart/form-data")
        or "boundary=" not in content_type
    ):
        raise MalformedForm("expected multipart/form-data with a boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise MalformedForm("the body has no parts")
    fields: dict[str, str] = {}
    audio: TranscriptionForm | None = None
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise MalformedForm("a part without a name")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "file":
            audio = TranscriptionForm(data, part.get_filename(), part.get_content_type(), {})
        else:
            fields[name] = data.decode()
    if audio is None:
        raise MalformedForm("no file part")
    return TranscriptionForm(audio.audio, audio.file_name, audio.content_type, fields)


def answer(request: RecordedRequest, reply: Reply) -> tuple[int, str, bytes]:
    """(status, content type, body) for a transcription request answered with `reply`."""
    try:
        form = parse_form(request)
    except MalformedForm as exc:
        return 400, "application/json", wire.error_body(400, f"Invalid form: {exc}")
    if not form.model:
        return 400, "application/json", wire.error_body(400, "model is required")
    if not form.audio:
        return 400, "application/json", wire.error_body(400, "The audio file is empty.")
    if reply.status != 200:
        return reply.status, "application/json", wire.error_body(reply.status, reply.error_message)
    if form.fields.get("response_format") == "text":
        return 200, "text/plain; charset=utf-8", reply.joined_text.encode()
    body = {"text": reply.joined_text, "usage": {"type": "duration", "seconds": 1}}
    return 200, "application/json", json.dumps(body).encode()
