"""The playground's composer features in a real Chromium: task widgets with buttons, attachments."""

from __future__ import annotations

import base64
import json
import re
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

from playwright.async_api import FilePayload, Locator, Request, expect

from tests.browser.conftest import PageFactory, StaticSite
from tests.browser.playground_page import Playground, page_url
from tests.e2e.harness import ServerProcess


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _playground(
    new_page: PageFactory, site: StaticSite, api: ServerProcess, artifacts: Path
) -> Playground:
    page = await new_page()
    app = Playground(page, page_url(site.origin, api.base_url), artifacts)
    await app.open()
    return app


def _chatkit_posts(app: Playground, api: ServerProcess) -> list[dict[str, Any]]:
    """Every ChatKit request body the page sends from now on (appended as they go)."""
    bodies: list[dict[str, Any]] = []

    def record(request: Request) -> None:
        if request.url == f"{api.base_url}/api/chatkit" and request.method == "POST":
            bodies.append(json.loads(request.post_data or "{}"))

    app.page.on("request", record)
    return bodies


async def test_task_widget_buttons_update_it_in_place_and_it_persists(
    new_page: PageFactory, page_site: StaticSite, offline_api: ServerProcess, artifacts_dir: Path
) -> None:
    app = await _playground(new_page, page_site, offline_api, artifacts_dir)
    await app.sign_in(_name("widgets"))
    await app.send("add task buy milk")
    await app.send("add task walk the dog")
    await app.send("list tasks")
    widget = app.page.locator("#transcript > .item-widget").last
    rows = widget.locator(".w-row[data-widget-id^='task-']")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0).locator(".w-text")).to_have_text("buy milk")
    await expect(rows.nth(1).locator(".w-text")).to_have_text("walk the dog")
    await expect(widget.locator(".w-title")).to_have_text("Your tasks")
    # Open tasks: not struck through, with a Done and a Delete button each.
    await expect(widget.locator(".w-line-through")).to_have_count(0)
    await expect(rows.nth(0).get_by_role("button", name="Done")).to_be_enabled()
    await expect(widget.get_by_role("button", name="Delete")).to_have_count(2)
    item_id = await widget.get_attribute("data-item-id")
    assert item_id
    await app.shot("task-widget")

    posts = _chatkit_posts(app, offline_api)
    await rows.nth(0).get_by_role("button", name="Done").click()
    await app.turn_done()
    # The same item, updated in place: milk done (struck through, no Done button), dog open.
    widget = app.page.locator(f"#transcript > .item-widget[data-item-id='{item_id}']")
    await expect(widget).to_have_count(1)
    milk = widget.locator(".w-row[data-widget-id^='task-']").nth(0)
    await expect(milk.locator(".w-text")).to_have_class(re.compile(r"\bw-line-through\b"))
    await expect(milk.get_by_role("button", name="Done")).to_have_count(0)
    await expect(widget.locator(".w-line-through")).to_have_count(1)
    await expect(widget.locator(".w-caption")).to_have_text("1 open, 1 done")
    assert len(posts) == 1, posts
    [action] = posts
    assert action["type"] == "threads.custom_action"
    params = action["params"]
    assert params["thread_id"] == app.thread_id()
    assert params["item_id"] == item_id
    assert params["action"]["type"] == "tasks.complete"
    assert set(params["action"]["payload"]) == {"task_id"}
    await app.shot("task-widget-done")

    # Delete the dog: the row goes.
    dog = widget.locator(".w-row[data-widget-id^='task-']").nth(1)
    await dog.get_by_role("button", name="Delete").click()
    await app.turn_done()
    await expect(widget.locator(".w-row[data-widget-id^='task-'] .w-text")).to_have_text(
        ["buy milk"]
    )

    # items.list gives back the saved widget.
    await app.reload()
    widget = app.page.locator(f"#transcript > .item-widget[data-item-id='{item_id}']")
    await expect(widget.locator(".w-row[data-widget-id^='task-'] .w-text")).to_have_text(
        ["buy milk"]
    )
    await expect(widget.locator(".w-line-through")).to_have_text(["buy milk"])
    await expect(widget.get_by_role("button", name="Done")).to_have_count(0)
    # No model turn ran for the buttons: still three answers.
    await expect(app.answers()).to_have_count(3)


def _png(width: int, height: int) -> bytes:
    """A real PNG (red pixels), built here so the test needs no fixture file."""
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def _image_loaded(image: Locator) -> bool:
    width: int = await image.evaluate("(img) => img.complete ? img.naturalWidth : 0")
    return width == 4


async def test_an_image_is_uploaded_in_two_phases_and_sent_with_the_message(
    new_page: PageFactory, page_site: StaticSite, offline_api: ServerProcess, artifacts_dir: Path
) -> None:
    app = await _playground(new_page, page_site, offline_api, artifacts_dir)
    await app.sign_in(_name("attach"))
    posts = _chatkit_posts(app, offline_api)
    uploads: list[Request] = []
    app.page.on(
        "request",
        lambda request: uploads.append(request) if "/attachments/" in request.url else None,
    )
    png = _png(4, 4)
    red_dot: FilePayload = {"name": "red-dot.png", "mimeType": "image/png", "buffer": png}
    await app.page.set_input_files("#attach-input", files=[red_dot])
    pending = app.page.locator("#pending-attachments > .attachment")
    await expect(pending).to_have_count(1)
    await expect(pending.locator(".attachment-name")).to_have_text("red-dot.png")
    preview = pending.locator("img")
    await expect(preview).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    await expect(preview).to_have_attribute("alt", "red-dot.png")
    assert await _image_loaded(preview)
    attachment_id = await pending.get_attribute("data-attachment-id")
    assert attachment_id

    # Phase one asked for it by name, size and type; phase two sent the bytes with the token.
    [create] = [body for body in posts if body["type"] == "attachments.create"]
    assert create["params"] == {"name": "red-dot.png", "size": len(png), "mime_type": "image/png"}
    [upload] = uploads
    assert upload.method == "POST"
    assert upload.url == f"{offline_api.base_url}/api/chatkit/attachments/{attachment_id}/upload"
    headers = await upload.all_headers()
    assert headers["authorization"].startswith("Bearer ")
    assert headers["content-type"].startswith("multipart/form-data")
    # The preview the server made is these very bytes (Playwright does not expose form bodies).
    src = await preview.get_attribute("src")
    assert src is not None and base64.b64decode(src.partition(",")[2]) == png

    await app.send("what is in this picture?")
    await expect(pending).to_have_count(0)
    [sent] = [body for body in posts if body["type"] == "threads.create"]
    assert sent["params"]["input"]["attachments"] == [attachment_id]
    await expect(app.answers().last).to_contain_text('"red-dot.png"')
    shown = app.questions().last.locator(".attachment img")
    await expect(shown).to_have_attribute("alt", "red-dot.png")
    assert await _image_loaded(shown)
    await app.shot("image-attachment")

    # After a reload, items.list brings the message back with its image.
    await app.reload()
    shown = app.questions().last.locator(".attachment img")
    await expect(shown).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert await _image_loaded(shown)
    await expect(app.answers().last).to_contain_text('"red-dot.png"')
