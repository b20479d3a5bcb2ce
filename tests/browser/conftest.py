"""A real dashboard for browser tests: uvicorn on loopback, a scripted upstream, a local action API.

Everything async runs on one event loop in a background thread; the tests drive Debian's chromium
with Playwright's sync API from the main thread. Tests wait on page state (Playwright's
``expect``), never on time, and each test has the scripted upstream's queue to itself
(:func:`scripted`): a reply one test queued and did not use fails that test and is gone before
the next.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn

from examples.scripted_upstream import ScriptedUpstream, running_upstream
from gateway.app import Services, create_app
from gateway.definitions.config import parse_config
from tests.support.action_api import ActionAPI, running_api
from tests.support.gateway import CRM_SECRET, UPSTREAM_KEY, actions

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ADMIN_TOKEN = "admin-TOKEN-for-browser-tests"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
WIDGET_KEY = "pk_widget_public_key_1"
"""The widget agent's public key (as a page would embed it)."""


@dataclass(frozen=True)
class WebPages:
    """Two plain web sites on loopback: the operator's shop (allowed) and another (not)."""

    shop: str
    elsewhere: str


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"<!doctype html><title>{self.server.server_port}</title><p>a web page".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def web_pages() -> Iterator[WebPages]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    shop, elsewhere = (f"http://127.0.0.1:{s.server_port}" for s in servers)
    try:
        yield WebPages(shop=shop, elsewhere=elsewhere)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@dataclass
class LiveGateway:
    """The running dashboard and its fakes, as the tests see them."""

    base_url: str
    upstream: ScriptedUpstream
    api: ActionAPI
    services: Services
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


class _Server(uvicorn.Server):
    """uvicorn's server with a start-up event (uvicorn itself has only a flag to poll)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()


def _config(tmp: Path, api: ActionAPI, upstream: ScriptedUpstream, pages: WebPages) -> Any:
    # The wizard creates the customer lookup; the agent starts with an explicit list of actions,
    # so enabling the new one is visible on its page.
    seeded = [a for a in actions(api.base_url) if a["name"] != "Get Customer Account"]
    return parse_config(
        {
            "upstream": {"base_url": upstream.base_url, "api_key": UPSTREAM_KEY, "model": "m1"},
            "database": f"sqlite:///{tmp / 'dashboard.db'}",
            "egress": {"allow": ["127.0.0.1"]},
            "secrets": {"CRM": CRM_SECRET},
            "agents": [
                {
                    "id": "support",
                    "name": "Support assistant",
                    "system_prompt": "You are the support assistant.",
                    "actions": ["return_request", "look_up_order"],
                },
                {"id": "locked", "system_prompt": "Private.", "api_keys": ["client-key-1"]},
                {
                    "id": "widget",
                    "system_prompt": "You are the shop's chat widget.",
                    "actions": ["look_up_order"],
                    "cors_origins": [pages.shop],
                    "widget_keys": [WIDGET_KEY],
                },
            ],
            "actions": seeded,
        },
        environ={},
    )


@pytest.fixture(scope="session")
def live_gateway(
    tmp_path_factory: pytest.TempPathFactory, web_pages: WebPages
) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("dashboard")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    ready: Future[LiveGateway] = Future()
    holder: dict[str, _Server] = {}

    async def serve() -> None:
        async with running_api() as api, running_upstream(api_key=UPSTREAM_KEY) as upstream:
            app = create_app(_config(tmp, api, upstream, web_pages), bind_host="127.0.0.1")
            server = _Server(uvicorn.Config(app, log_level="warning", ws="none", lifespan="on"))
            holder["server"] = server
            task = asyncio.create_task(server.serve(sockets=[sock]))
            started = asyncio.create_task(server.ready.wait())
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if task.done():
                ready.set_exception(RuntimeError("the server did not start"))
                await task
                return
            ready.set_result(
                LiveGateway(
                    f"http://127.0.0.1:{port}",
                    upstream,
                    api,
                    app.state.services,
                    asyncio.get_running_loop(),
                )
            )
            await task

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)

    previous = os.environ.get("ACTIONGATE_ADMIN_TOKEN")
    os.environ["ACTIONGATE_ADMIN_TOKEN"] = ADMIN_TOKEN
    thread = threading.Thread(target=run, name="dashboard-server", daemon=True)
    thread.start()
    try:
        yield ready.result(timeout=30)
    finally:
        if "server" in holder:
            holder["server"].should_exit = True
        thread.join(timeout=30)
        sock.close()
        if previous is None:
            os.environ.pop("ACTIONGATE_ADMIN_TOKEN", None)
        else:
            os.environ["ACTIONGATE_ADMIN_TOKEN"] = previous


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def shot(page: Page, name: str) -> None:
    """A full-page screenshot into ``test-artifacts/screenshots``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def login(page: Page, gw: LiveGateway) -> None:
    """Log in with the admin token (the dashboard lands on the Overview)."""
    page.goto(f"{gw.base_url}/login")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()


@pytest.fixture(autouse=True)
def scripted(live_gateway: LiveGateway) -> Iterator[ScriptedUpstream]:
    """The scripted upstream, its queue this test's own (see ``ScriptedUpstream.isolated``).

    Touched from the test's thread while the server's loop serves: only deque appends, pops and
    clears, which are atomic, and between tests nothing is in flight.
    """
    with live_gateway.upstream.isolated() as upstream:
        yield upstream


def open_playground(page: Page, agent: str | None = None) -> None:
    """Open the Playground (for ``agent``) and wait until its script handles the composer."""
    from playwright.sync_api import expect

    page.goto("/playground" + (f"?agent={agent}" if agent else ""))
    expect(page.locator("#playground")).to_have_attribute("data-ready", "true")


def say(page: Page, text: str) -> None:
    """Send ``text`` from the Playground's composer (the click waits for Send to be enabled)."""
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


@pytest.fixture
def page(browser: Browser, live_gateway: LiveGateway) -> Iterator[Page]:
    context = browser.new_context(base_url=live_gateway.base_url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    login(page, live_gateway)
    yield page
    context.close()
