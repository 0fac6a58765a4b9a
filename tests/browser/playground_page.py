"""The playground page as a test sees it: a few actions and locators over a Playwright page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
from playwright.async_api import Locator, Page, expect

TURN_TIMEOUT_MS = 30_000


def page_url(site_origin: str, api_base: str) -> str:
    """The page on its own origin, pointed at an API on another one."""
    return f"{site_origin}/?api={quote(api_base, safe='')}"


async def dev_token(api_base: str, user: str) -> str:
    """A token for `user` from the server's /api/dev/token (the test runs on loopback)."""
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(f"{api_base}/api/dev/token", json={"user": user})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@dataclass
class Playground:
    page: Page
    url: str
    artifacts: Path

    async def open(self) -> None:
        await self.page.goto(self.url)
        await self.ready()

    async def ready(self) -> None:
        await self.page.locator("body[data-ready='true']").wait_for(state="attached")

    async def reload(self) -> None:
        await self.page.reload()
        await self.ready()

    async def sign_in(self, name: str) -> None:
        await self.page.fill("#name-input", name)
        await self.page.click("#name-form button[type=submit]")
        await self.threads_loaded()
        await expect(self.page.locator("#who")).to_have_text(f"Signed in as {name}")

    async def threads_loaded(self) -> None:
        await self.page.locator("#chat:not([hidden])").wait_for()
        await self.page.locator("#thread-list[aria-busy='false']").wait_for(state="attached")

    async def send(self, text: str, *, wait: bool = True) -> None:
        await self.page.fill("#message-input", text)
        await self.page.press("#message-input", "Enter")
        if wait:
            await self.turn_done()

    async def turn_done(self) -> None:
        composer = self.page.locator("#composer[aria-busy='false']")
        await composer.wait_for(state="attached", timeout=TURN_TIMEOUT_MS)

    def answers(self) -> Locator:
        return self.page.locator("#transcript > .item-assistant-message")

    def questions(self) -> Locator:
        return self.page.locator("#transcript > .item-user-message")

    def errors(self) -> Locator:
        return self.page.locator("#transcript > .item-error")

    def threads(self) -> Locator:
        return self.page.locator("#thread-list > li")

    def thread(self, title: str) -> Locator:
        return self.threads().filter(has=self.page.get_by_role("button", name=title, exact=True))

    def thread_id(self) -> str:
        fragment = self.page.url.partition("#thread=")[2]
        assert fragment, f"no thread in the address: {self.page.url}"
        return fragment

    async def seen_classes(self) -> set[str]:
        seen: list[str] = await self.page.evaluate("() => [...window.__seenClasses]")
        return set(seen)

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        return await self.page.evaluate(script, arg)

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=self.artifacts / f"{name}.png", full_page=True)
