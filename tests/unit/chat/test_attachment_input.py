"""What the model receives for attachments, and how the offline model answers them."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from agents.items import TResponseInputItem
from chatkit.types import (
    FileAttachment,
    ImageAttachment,
    InferenceOptions,
    UserMessageItem,
    UserMessageTextContent,
)
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

from app.agent.attachment_notes import attachment_names, attachment_note
from app.agent.offline_model import OfflineDemoModel, attached_names
from app.chat.attachment_input import (
    MAX_TEXT_CHARS,
    AttachmentConverter,
    budgeted_ids,
    model_content,
)
from app.store.attachment_blobs import Blob

PNG = b"\x89PNG\r\n\x1a\nxyz"


def image(attachment_id: str, size: int = len(PNG)) -> ImageAttachment:
    return ImageAttachment(
        id=attachment_id,
        name=f"{attachment_id}.png",
        mime_type="image/png",
        preview_url="https://h/p",
        metadata={"size": size, "uploaded": True},
    )


def file(attachment_id: str, mime_type: str, name: str, size: int = 3) -> FileAttachment:
    return FileAttachment(
        id=attachment_id, name=name, mime_type=mime_type, metadata={"size": size, "uploaded": True}
    )


def content_parts(item: TResponseInputItem) -> list[Any]:
    """The content parts of one converted message (read as the plain dict it is)."""
    message: dict[str, Any] = dict(item)
    return list(message["content"])


def message(text: str, *attachments: ImageAttachment | FileAttachment) -> UserMessageItem:
    return UserMessageItem(
        id=f"msg_{text}",
        thread_id="thr_1",
        created_at=datetime.now(),
        content=[UserMessageTextContent(text=text)],
        attachments=list(attachments),
        inference_options=InferenceOptions(),
    )


def test_each_kind_becomes_its_input_part() -> None:
    assert model_content(image("a"), Blob("image/png", PNG)) == {
        "type": "input_image",
        "image_url": "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "detail": "auto",
    }
    pdf = model_content(file("b", "application/pdf", "r.pdf"), Blob("application/pdf", b"%PDF-"))
    assert pdf == {
        "type": "input_file",
        "file_data": "data:application/pdf;base64," + base64.b64encode(b"%PDF-").decode(),
        "filename": "r.pdf",
    }
    notes = model_content(
        file("c", "text/markdown", "n.md"), Blob("text/markdown", b"\xef\xbb\xbf# hi")
    )
    assert notes["type"] == "input_text"
    assert notes["text"] == "Contents of the attached file n.md (text/markdown):\n# hi"
    long = model_content(
        file("d", "text/plain", "l.txt"), Blob("text/plain", b"a" * (MAX_TEXT_CHARS + 5))
    )
    assert long["type"] == "input_text" and long["text"].endswith("left out]")


def test_the_budget_keeps_the_newest_attachments() -> None:
    old, new = image("old", size=600), image("new", size=600)
    history = [message("first", old), message("second", new)]
    assert budgeted_ids(history, 1000) == {"new"}
    assert budgeted_ids(history, 1200) == {"old", "new"}


async def test_converter_reads_bytes_names_files_and_survives_missing_ones() -> None:
    store = {"a": Blob("image/png", PNG)}
    read_ids: list[str] = []

    async def read(attachment_id: str) -> Blob | None:
        read_ids.append(attachment_id)
        return store.get(attachment_id)

    history = [message("look", image("a"), file("gone", "text/plain", "gone.txt"))]
    converter = AttachmentConverter().for_turn(history, read)
    converted = await converter.to_agent_input(history)
    content = content_parts(converted[0])
    assert content[0] == {"type": "input_text", "text": "look"}
    assert attachment_names(content[1]["text"]) == ["a.png", "gone.txt"]
    assert content[2]["type"] == "input_image"
    assert "no longer available" in content[3]["text"]
    assert read_ids == ["a", "gone"]

    unbound = await AttachmentConverter().to_agent_input(history)
    assert "not included" in content_parts(unbound[0])[2]["text"]


def test_notes_read_back_any_name() -> None:
    names = ["a, b.png", 'quote".txt', "]tricky["]
    assert attachment_names(attachment_note(names)) == names
    assert attachment_names("[Attached files: not json]") is None
    assert attachment_names("plain text") is None


async def test_offline_model_acknowledges_attachments_by_name() -> None:
    history = [message("", image("cat"), file("n", "text/plain", "notes.txt"))]
    items = await AttachmentConverter().to_agent_input(history)
    assert attached_names(items) == ["cat.png", "notes.txt"]
    reply = OfflineDemoModel()._decide(items, [])
    assert isinstance(reply, ResponseOutputMessage)
    assert isinstance(reply.content[0], ResponseOutputText)
    text = reply.content[0].text
    assert '"cat.png"' in text and '"notes.txt"' in text


async def test_offline_commands_ignore_attached_text() -> None:
    async def read(attachment_id: str) -> Blob | None:
        return Blob("text/plain", b"add task from the file")

    history = [message("list tasks", file("n", "text/plain", "n.txt"))]
    items = await AttachmentConverter().for_turn(history, read).to_agent_input(history)

    class Tool:
        name = "list_tasks"

    call = OfflineDemoModel()._decide(items, [Tool()])  # type: ignore[list-item]
    assert call.type == "function_call" and call.name == "list_tasks"
