"""A real dashboard for browser tests: uvicorn on loopback, a scripted upstream, a local action API.

Everything async runs on one event loop in a background thread; the tests drive Debian's chromium
with Playwright's sync API from the main thread.
"""

from __future__ import annotations

import asyncio
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
from gateway.admin.dashboard import build_dashboard, mount_static
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


def _config(tmp: Path, api: ActionAPI, upstream: ScriptedUpstream) -> Any:
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
            ],
            "actions": seeded,
        },
        environ={},
    )


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("dashboard")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    ready: Future[LiveGateway] = Future()
    holder: dict[str, uvicorn.Server] = {}

    async def serve() -> None:
        async with running_api() as api, running_upstream(api_key=UPSTREAM_KEY) as upstream:
            app = create_app(_config(tmp, api, upstream))
            app.include_router(build_dashboard(lambda r: r.app.state.services))
            mount_static(app)
            server = uvicorn.Server(
                uvicorn.Config(app, log_level="warning", ws="none", lifespan="on")
            )
            holder["server"] = server
            task = asyncio.create_task(server.serve(sockets=[sock]))
            # uvicorn exposes no start-up event, only this flag.
            while not server.started and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
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
    """Log in with the admin token."""
    page.goto(f"{gw.base_url}/login")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Custom Actions")).to_be_visible()


@pytest.fixture
def page(browser: Browser, live_gateway: LiveGateway) -> Iterator[Page]:
    context = browser.new_context(base_url=live_gateway.base_url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    login(page, live_gateway)
    yield page
    context.close()
