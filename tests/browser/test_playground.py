"""The playground in a real Chromium, on another origin than the API it talks ChatKit to."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Request, expect
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from tests.browser.conftest import (
    COUNT_PREFIX,
    FAIL_PREFIX,
    MARKDOWN_PREFIX,
    SLOW_PREFIX,
    SLOW_TEXT,
    BrowserLog,
    PageFactory,
    StaticSite,
)
from tests.browser.playground_page import Playground, dev_token, page_url
from tests.e2e.harness import ChatKitClient, ServerProcess
from tests.fake_llm import FakeLLM, Reply

FRAME_ID = re.compile(r"^[0-9a-f]{32}$")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _playground(
    new_page: PageFactory, site: StaticSite, api: ServerProcess, artifacts: Path, **options: Any
) -> Playground:
    page = await new_page(**options)
    app = Playground(page, page_url(site.origin, api.base_url), artifacts)
    await app.open()
    return app


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_sign_in_and_a_tool_turn_streams_across_origins(
    new_page: PageFactory, page_site: StaticSite, offline_api: ServerProcess, artifacts_dir: Path
) -> None:
    app = await _playground(new_page, page_site, offline_api, artifacts_dir)
    chatkit_requests: list[Request] = []
    app.page.on(
        "request",
        lambda request: (
            chatkit_requests.append(request)
            if request.url == f"{offline_api.base_url}/api/chatkit"
            else None
        ),
    )
    await expect(app.page.locator("#api-origin")).to_have_text(f"API: {offline_api.base_url}")
    await expect(app.page.locator("#token-form")).to_be_hidden()
    name = _name("alice")
    await app.sign_in(name)
    await expect(app.threads()).to_have_count(0)

    await app.send("add task buy milk")
    # While the tool ran, its task was on screen (loading), and the answer streamed in.
    seen = await app.seen_classes()
    assert {"item-workflow", "task-loading", "streaming"} <= seen, seen
    task = app.page.locator("#transcript > .item-workflow .task")
    await expect(task).to_have_class(re.compile(r"\btask-complete\b"))
    await expect(task.locator(".task-title")).to_have_text("Adding a task")
    await expect(app.answers().last.locator(".bubble")).to_contain_text("buy milk")

    await app.send("list tasks")
    listed = app.answers().last.locator(".bubble ul > li")
    await expect(listed).to_have_count(1)
    await expect(listed).to_contain_text("buy milk")
    await expect(app.threads()).to_have_count(1)
    await expect(app.threads().first).to_have_class(re.compile(r"\bcurrent\b"))
    await expect(app.threads().first.locator(".thread-open")).to_have_text("add task buy milk")
    await app.shot("tool-turn")

    # Every ChatKit request carried what the component sends, from the page's origin.
    posts = [request for request in chatkit_requests if request.method == "POST"]
    ops = [json.loads(request.post_data or "{}")["type"] for request in posts]
    assert ops == ["threads.list", "threads.create", "threads.add_user_message"]
    frame_ids = set()
    for request in posts:
        headers = await request.all_headers()
        assert headers["authorization"].startswith("Bearer ")
        assert headers["accept-language"] == "en-GB"
        assert headers["origin"] == page_site.origin
        assert FRAME_ID.match(headers["chatkit-frame-instance-id"])
        frame_ids.add(headers["chatkit-frame-instance-id"])
    assert len(frame_ids) == 1


async def test_reload_shows_the_thread_rename_and_delete_persist(
    new_page: PageFactory, page_site: StaticSite, offline_api: ServerProcess, artifacts_dir: Path
) -> None:
    app = await _playground(new_page, page_site, offline_api, artifacts_dir)
    await app.sign_in(_name("reload"))
    await app.send("add task water plants")
    await app.send("list tasks")
    thread_id = app.thread_id()

    await app.reload()
    assert app.thread_id() == thread_id
    await expect(app.questions()).to_have_text(["add task water plants", "list tasks"])
    await expect(app.answers()).to_have_count(2)
    await expect(app.answers().last.locator("li")).to_contain_text("water plants")
    await expect(app.page.locator("#transcript > .item-workflow")).to_have_count(2)
    await expect(app.threads()).to_have_count(1)
    await app.shot("after-reload")

    # Rename (threads.update), then check it was stored.
    await app.threads().first.locator(".thread-rename").click()
    await app.page.fill(".thread-title-input", "Garden jobs")
    await app.page.press(".thread-title-input", "Enter")
    await expect(app.thread("Garden jobs")).to_have_count(1)
    await app.reload()
    await expect(app.thread("Garden jobs")).to_have_count(1)

    # A second conversation, then delete the first one (two clicks: ask, confirm).
    await app.page.click("#new-thread")
    await expect(app.questions()).to_have_count(0)
    await app.send("add task weed the beds")
    await expect(app.threads()).to_have_count(2)
    second_id = app.thread_id()
    assert second_id != thread_id
    delete = app.thread("Garden jobs").locator(".thread-delete")
    await delete.click()
    await expect(delete).to_have_text("Delete?")
    await delete.click()
    await expect(app.threads()).to_have_count(1)
    await app.reload()
    await expect(app.threads()).to_have_count(1)
    await expect(app.threads().first.locator(".thread-open")).to_have_text("add task weed the beds")
    assert app.thread_id() == second_id


async def test_thread_list_and_a_long_thread_page_on_demand(
    new_page: PageFactory, page_site: StaticSite, offline_api: ServerProcess, artifacts_dir: Path
) -> None:
    name = _name("pager")
    client = ChatKitClient(offline_api.base_url, await dev_token(offline_api.base_url, name))
    try:
        long_thread = (await client.send("turn 00")).thread_id
        for turn in range(1, 11):
            result = await client.send(f"turn {turn:02d}", long_thread)
            assert result.status == 200
        for batch in range(4):
            sends = [client.send(f"short {batch * 5 + i:02d}") for i in range(5)]
            assert all(r.status == 200 for r in await asyncio.gather(*sends))
    finally:
        await client.aclose()

    app = await _playground(new_page, page_site, offline_api, artifacts_dir)
    await app.sign_in(name)
    await expect(app.threads()).to_have_count(20)
    await expect(app.thread("turn 00")).to_have_count(0)
    await app.page.click("#more-threads")
    await expect(app.threads()).to_have_count(21)
    await expect(app.page.locator("#more-threads")).to_be_hidden()

    await app.thread("turn 00").locator(".thread-open").click()
    await expect(app.questions().last).to_have_text("turn 10")
    earlier = app.page.locator("#earlier-items")
    await expect(earlier).to_be_visible()
    assert await app.questions().count() < 11
    for _ in range(5):
        if not await earlier.is_visible():
            break
        before = await app.questions().count()
        await earlier.click()
        await expect(app.questions()).not_to_have_count(before)
    await expect(earlier).to_be_hidden()
    await expect(app.questions()).to_have_text([f"turn {turn:02d}" for turn in range(11)])
    await expect(app.answers()).to_have_count(11)
    await app.shot("long-thread")


async def test_stop_mid_answer_keeps_the_partial_text(
    new_page: PageFactory,
    page_site: StaticSite,
    model_api: ServerProcess,
    fake_model: FakeLLM,
    artifacts_dir: Path,
) -> None:
    app = await _playground(new_page, page_site, model_api, artifacts_dir)
    name = _name("stopper")
    await app.sign_in(name)
    prompt = f"{SLOW_PREFIX} a long story {uuid.uuid4().hex[:6]}"
    await app.send(prompt, wait=False)
    answer = app.answers().last
    await expect(answer.locator(".bubble")).to_contain_text("word010", timeout=20_000)
    await expect(app.page.locator("#stop")).to_be_enabled()
    await app.page.click("#stop")
    await app.turn_done()
    await expect(answer.locator(".item-note")).to_have_text("Stopped")
    await expect(app.page.locator("#stop")).to_be_hidden()
    shown = (await answer.locator(".bubble").inner_text()).strip()
    assert shown.startswith("word000 word001")
    assert len(shown) < len(SLOW_TEXT)
    await app.shot("stopped")

    # The server stopped the model call and kept what had been written.
    model_call = next(r for r in fake_model.model_requests() if r.last_user_text == prompt)

    async def model_call_closed() -> bool:
        return model_call.client_disconnected

    await _eventually(model_call_closed)
    client = ChatKitClient(model_api.base_url, await dev_token(model_api.base_url, name))
    thread_id = app.thread_id()
    stored: list[str] = []

    async def saved() -> bool:
        page = await client.call("items.list", {"thread_id": thread_id, "order": "asc"})
        stored[:] = [
            "".join(part["text"] for part in item["content"])
            for item in page["data"]
            if item["type"] == "assistant_message"
        ]
        return bool(stored)

    try:
        await _eventually(saved)
    finally:
        await client.aclose()
    assert len(stored) == 1
    assert stored[0].startswith(shown)
    assert len(stored[0]) < len(SLOW_TEXT)

    await app.reload()
    await expect(app.answers()).to_have_count(1)
    await expect(app.answers().first.locator(".bubble")).to_have_text(stored[0].strip())
    # The thread goes on after a stop.
    await app.send(f"{COUNT_PREFIX} and now?")
    await expect(app.answers().last.locator(".bubble")).to_have_text(
        re.compile(r"^Answer number \d+\.$")
    )


async def test_feedback_and_retry(
    new_page: PageFactory,
    page_site: StaticSite,
    model_api: ServerProcess,
    fake_model: FakeLLM,
    pg_engine: AsyncEngine,
    artifacts_dir: Path,
) -> None:
    app = await _playground(new_page, page_site, model_api, artifacts_dir)
    await app.sign_in(_name("rater"))
    question = f"{COUNT_PREFIX} first question {uuid.uuid4().hex[:6]}"
    await app.send(question)
    answer = app.answers().last
    first_text = await answer.locator(".bubble").inner_text()
    assert re.fullmatch(r"Answer number \d+\.", first_text.strip())
    item_id = await answer.get_attribute("data-item-id")
    assert item_id

    async def stored_kind() -> str | None:
        async with pg_engine.connect() as conn:
            kind: str | None = await conn.scalar(
                text("select kind from chat_feedback where item_id = :id"), {"id": item_id}
            )
        return kind

    good = answer.locator("[data-action='feedback-positive']")
    bad = answer.locator("[data-action='feedback-negative']")
    await good.click()
    await expect(good).to_have_attribute("aria-pressed", "true")
    assert await stored_kind() == "positive"
    await bad.click()
    await expect(bad).to_have_attribute("aria-pressed", "true")
    await expect(good).to_have_attribute("aria-pressed", "false")
    assert await stored_kind() == "negative"

    await answer.locator("[data-action='retry']").click()
    await app.turn_done()
    await expect(app.answers()).to_have_count(1)
    retried = app.answers().last
    await expect(retried.locator(".bubble")).to_have_text(re.compile(r"^Answer number \d+\.$"))
    assert (await retried.locator(".bubble").inner_text()) != first_text
    assert await retried.get_attribute("data-item-id") != item_id
    calls = [r for r in fake_model.model_requests() if r.last_user_text == question]
    assert len(calls) == 2
    await app.shot("retried")

    await app.reload()
    await expect(app.questions()).to_have_text([question])
    await expect(app.answers()).to_have_count(1)
    await expect(app.answers().first.locator(".bubble")).not_to_have_text(first_text)


async def test_a_second_user_sees_none_of_the_first_users_threads(
    new_page: PageFactory,
    page_site: StaticSite,
    offline_api: ServerProcess,
    browser_log: BrowserLog,
    artifacts_dir: Path,
) -> None:
    app = await _playground(new_page, page_site, offline_api, artifacts_dir)
    await app.sign_in(_name("owner"))
    await app.send("add task secret plan")
    secret_thread = app.thread_id()
    await expect(app.threads()).to_have_count(1)

    await app.page.click("#sign-out")
    await expect(app.page.locator("#name-form")).to_be_visible()
    await expect(app.threads()).to_have_count(0)
    await app.sign_in(_name("other"))
    await expect(app.threads()).to_have_count(0)
    await expect(app.questions()).to_have_count(0)

    # Even with the thread's address, the other user gets nothing (the API answers 404).
    browser_log.expect(r"status of 404")
    await app.evaluate(
        "(id) => { location.hash = 'thread=' + id; location.reload(); }", secret_thread
    )
    await app.ready()
    await expect(app.page.locator("#transcript > .item-notice")).to_contain_text("not yours")
    await expect(app.page.locator("body")).not_to_contain_text("secret plan")
    await expect(app.threads()).to_have_count(0)
    await app.shot("other-user")


async def test_an_error_event_is_shown_and_can_be_retried(
    new_page: PageFactory,
    page_site: StaticSite,
    model_api: ServerProcess,
    fake_model: FakeLLM,
    artifacts_dir: Path,
) -> None:
    app = await _playground(new_page, page_site, model_api, artifacts_dir)
    await app.sign_in(_name("unlucky"))
    await app.send(f"{FAIL_PREFIX} please")
    error = app.errors().last
    await expect(error).to_have_attribute("role", "alert")
    await expect(error).to_contain_text("The language model service failed (HTTP 500)")
    await app.shot("error-event")

    fake_model.enqueue(Reply.text("Recovered after all."))
    await error.locator("[data-action='retry']").click()
    await app.turn_done()
    await expect(app.errors()).to_have_count(0)
    await expect(app.answers().last.locator(".bubble")).to_have_text("Recovered after all.")


async def test_answers_render_as_sanitised_markdown(
    new_page: PageFactory, page_site: StaticSite, model_api: ServerProcess, artifacts_dir: Path
) -> None:
    app = await _playground(new_page, page_site, model_api, artifacts_dir)
    await app.sign_in(_name("markdown"))
    await app.send(f"{MARKDOWN_PREFIX} show me")
    bubble = app.answers().last.locator(".bubble")
    await expect(bubble.locator("strong")).to_have_text("Bold")
    await expect(bubble.locator("em")).to_have_text("italic")
    await expect(bubble.locator("p > code")).to_have_text("code <b>x</b>")
    await expect(bubble.locator("pre > code")).to_have_text("<script>alert(5)</script>")
    await expect(bubble).to_contain_text('<img src=x onerror="alert(1)">')
    transcript = app.page.locator("#transcript")
    assert await transcript.locator("img, script, b, iframe").count() == 0
    links = bubble.locator("a")
    await expect(links).to_have_count(1)
    await expect(links).to_have_attribute("href", "https://example.com/docs?a=1&b=2")
    await expect(links).to_have_attribute("rel", "noopener noreferrer nofollow")
    await expect(bubble.locator("li")).to_have_text(["bad link", "good link", "data link"])
    await app.shot("markdown")


async def test_same_origin_page_and_themes(
    new_page: PageFactory, offline_api: ServerProcess, artifacts_dir: Path
) -> None:
    page = await new_page(color_scheme="dark")
    app = Playground(page, f"{offline_api.base_url}/", artifacts_dir)
    await app.open()
    await expect(page.locator("#api-origin")).to_be_hidden()
    await app.sign_in(_name("night"))
    body = page.locator("body")
    await expect(body).to_have_css("background-color", "rgb(22, 24, 28)")
    await expect(page.locator("#theme-toggle")).to_have_text("Light theme")
    await app.send("list tasks")
    await expect(app.answers()).to_have_count(1)
    await app.shot("theme-dark")
    await page.click("#theme-toggle")
    await expect(body).to_have_css("background-color", "rgb(255, 255, 255)")
    await app.reload()
    await expect(body).to_have_css("background-color", "rgb(255, 255, 255)")
    await expect(page.locator("#theme-toggle")).to_have_text("Dark theme")
    await app.shot("theme-light")


async def test_token_sign_in_when_the_playground_is_on_in_another_mode(
    new_page: PageFactory,
    page_site: StaticSite,
    token_api: ServerProcess,
    minter: SharedSecretVerifier,
    artifacts_dir: Path,
) -> None:
    app = await _playground(new_page, page_site, token_api, artifacts_dir)
    await expect(app.page.locator("#name-form")).to_be_hidden()
    user = _name("pasted")
    await app.page.fill("#token-input", minter.mint(user))
    await app.page.click("#token-form button[type=submit]")
    await app.threads_loaded()
    await expect(app.page.locator("#who")).to_have_text(f"Signed in as {user}")
    await app.send("add task from a pasted token")
    await expect(app.answers().last.locator(".bubble")).to_contain_text("from a pasted token")
    await app.reload()
    await expect(app.questions()).to_have_text(["add task from a pasted token"])
    await app.shot("token-sign-in")
