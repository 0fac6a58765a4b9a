"""Browser fixtures: Debian's Chromium driven by Playwright, the page on its own origin, servers.

The playground page is served by a small static server on one port and talks to API servers on
other ports, so every request is cross-origin and passes CORS with the headers the ChatKit
component sends. Screenshots go to $BROWSER_ARTIFACTS_DIR (or a pytest temp directory); the
path is printed at the end of the run.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, async_playwright

from app.api.playground import PAGE_HEADERS, STATIC_DIR
from tests.e2e.harness import ServerProcess
from tests.fake_llm import FakeLLM, RecordedRequest, Reply
from tests.server_fixtures import SECRET

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Scripted answers of the fake model, chosen by the start of the user's message.
SLOW_PREFIX = "slow:"
FAIL_PREFIX = "fail:"
COUNT_PREFIX = "count:"
MARKDOWN_PREFIX = "markdown:"
SLOW_TEXT = " ".join(f"word{i:03d}" for i in range(300))
HOSTILE_MARKDOWN = (
    "**Bold** and *italic* and `code <b>x</b>`.\n\n"
    '<img src=x onerror="alert(1)"> <script>alert(2)</script>\n\n'
    "- [bad link](javascript:document.body.remove)\n"
    "- [good link](https://example.com/docs?a=1&b=2)\n"
    "- [data link](data:text/html;base64,PHNjcmlwdD5hbGVydCg0KTwvc2NyaXB0Pg==)\n\n"
    "```\n<script>alert(5)</script>\n```"
)

_artifacts: list[Path] = []


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _artifacts:
        terminalreporter.write_line(f"browser screenshots: {_artifacts[0]}")


# ------------------------------------------------------------------ browser


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(
            "browser tests need Chromium at /usr/bin/chromium: install Debian's `chromium` "
            "package (scripts/ensure-test-deps.sh does when run as root)"
        )
    return path


@pytest.fixture(scope="session")
async def browser(chromium_executable: str) -> AsyncIterator[Browser]:
    """One Chromium for the session; each test gets fresh contexts (a new, empty profile)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("BROWSER_ARTIFACTS_DIR")
    path = Path(configured) if configured else tmp_path_factory.mktemp("browser-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    _artifacts.append(path)
    return path


@dataclass
class BrowserLog:
    """Console errors and uncaught exceptions of a test's pages; expected ones are listed."""

    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect(self, pattern: str) -> None:
        """Allow console errors matching `pattern` (e.g. the 404 of a resource that is gone)."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


# Records every class name that ever appears in the page: proves transient states were shown.
SEEN_CLASSES_SCRIPT = """
window.__seenClasses = new Set();
new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (node.nodeType !== 1) continue;
      for (const el of [node, ...node.querySelectorAll("*")]) {
        for (const name of el.classList) window.__seenClasses.add(name);
      }
    }
  }
}).observe(document, { subtree: true, childList: true });
"""

PageFactory = Callable[..., Awaitable[Page]]


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
async def new_page(
    browser: Browser,
    browser_log: BrowserLog,
    artifacts_dir: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[PageFactory]:
    """Pages in fresh browser contexts; any console error fails the test; a final screenshot."""
    contexts = []
    pages: list[Page] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            browser_log.errors.append(f"console: {message.text} ({message.location})")

    def on_dialog(dialog: Dialog) -> None:
        browser_log.errors.append(f"dialog: {dialog.type} {dialog.message}")

    async def factory(*, color_scheme: Any = "light") -> Page:
        context = await browser.new_context(
            color_scheme=color_scheme, locale="en-GB", viewport={"width": 1200, "height": 800}
        )
        contexts.append(context)
        page = await context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: browser_log.errors.append(f"pageerror: {error}"))
        page.on("dialog", on_dialog)
        await page.add_init_script(script=SEEN_CLASSES_SCRIPT)
        pages.append(page)
        return page

    yield factory
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    for index, page in enumerate(pages):
        if not page.is_closed():
            await page.screenshot(path=artifacts_dir / f"{name}-final-{index}.png", full_page=True)
    for context in contexts:
        await context.close()
    unexpected = browser_log.unexpected()
    assert not unexpected, "browser console errors:\n" + "\n".join(unexpected)


# ------------------------------------------------------------------ the page's own origin


class _PageHandler(SimpleHTTPRequestHandler):
    """Serves `/` and `/playground/<file>` from the package's static files, like the app."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".css": "text/css",
    }

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean == "/":
            return str(STATIC_DIR / "index.html")
        name = clean.removeprefix("/playground/")
        if name != clean and "/" not in name and (STATIC_DIR / name).is_file():
            return str(STATIC_DIR / name)
        return str(STATIC_DIR / "__missing__")

    def end_headers(self) -> None:
        for header, value in PAGE_HEADERS.items():
            self.send_header(header, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@dataclass
class StaticSite:
    origin: str


@pytest.fixture(scope="session")
def page_site() -> Iterator[StaticSite]:
    """The playground's static files on a port of their own: another origin than every API."""
    handler = partial(_PageHandler, directory=str(STATIC_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="playground-page", daemon=True)
    thread.start()
    try:
        yield StaticSite(origin=f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ API servers


def _api_env(postgres_url: str, data_dir: Path, page_origin: str, **extra: str) -> dict[str, str]:
    """The local-secret mode (no AUTH_* set): the playground is on and signs in by name."""
    return {
        "DATABASE_URL": postgres_url,
        "DATA_DIR": str(data_dir),
        "CORS_ORIGINS": page_origin,
        "PLAYGROUND": "auto",
        "THREAD_TITLES": "first_words",
        # Tests seed many turns for one user quickly.
        "RATE_LIMIT_TURNS_PER_MINUTE": "0",
        "RATE_LIMIT_CONCURRENT_STREAMS": "0",
        **extra,
    }


def scripted_model(request: RecordedRequest, counter: Iterator[int]) -> Reply:
    """The fake model's answers for the browser tests, by the user's message."""
    text = request.last_user_text or ""
    if text.startswith(SLOW_PREFIX):
        return Reply.text(SLOW_TEXT, chunk_size=8, delay_between=0.05)
    if text.startswith(FAIL_PREFIX):
        return Reply.error(500, "scripted failure")
    if text.startswith(COUNT_PREFIX):
        return Reply.text(f"Answer number {next(counter)}.")
    if text.startswith(MARKDOWN_PREFIX):
        return Reply.text(HOSTILE_MARKDOWN)
    return Reply.text(f"echo: {text}")


@pytest.fixture(scope="session")
def fake_model(fake_llm_server: FakeLLM) -> Iterator[FakeLLM]:
    """The browser suite's channel of the session's fake model server."""
    fake = fake_llm_server.channel("browser")
    fake.reset()
    fake.responder = partial(scripted_model, counter=itertools.count(1))
    yield fake
    fake.reset()


def _start(
    name: str,
    postgres_url: str,
    page_site: StaticSite,
    factory: pytest.TempPathFactory,
    **extra: str,
) -> ServerProcess:
    env = _api_env(postgres_url, factory.mktemp(f"{name}-data"), page_site.origin, **extra)
    server = ServerProcess(env=env, log_path=factory.mktemp("logs") / f"{name}-api.log")
    server.start()
    return server


# One at a time, and only when a test needs it: start-up is mostly CPU-bound imports.


@pytest.fixture(scope="session")
def offline_api(
    postgres_url: str, page_site: StaticSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The embedded defaults (offline demo model, embedded MCP) in the local-secret mode."""
    server = _start("offline", postgres_url, page_site, tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def model_api(
    postgres_url: str,
    page_site: StaticSite,
    fake_model: FakeLLM,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """The local-secret mode with the scripted fake model (slow answers, failures, markdown)."""
    server = _start(
        "model",
        postgres_url,
        page_site,
        tmp_path_factory,
        OPENAI_BASE_URL=fake_model.base_url,
        OPENAI_API_KEY="test-key",
        OPENAI_MAX_RETRIES="0",
        OPENAI_TIMEOUT="10",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_api(
    postgres_url: str, page_site: StaticSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Shared-secret mode with PLAYGROUND=true: the page asks for a bearer token to paste."""
    server = _start(
        "token",
        postgres_url,
        page_site,
        tmp_path_factory,
        AUTH_JWT_SECRET=SECRET,
        PLAYGROUND="true",
    )
    yield server
    server.stop()
