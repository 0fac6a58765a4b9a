"""The playground's composer features in a real Chromium: task widgets with buttons, attachments."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from playwright.async_api import Request, expect

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
