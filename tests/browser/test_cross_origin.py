"""What a web page on another site can make a gateway do, tried in a real Chromium.

The gateway listens on loopback as ``serve`` would (``bind_host="127.0.0.1"``). Two plain web
sites run on other loopback ports: the shop, listed in the ``widget`` agent's ``cors_origins``,
and a site that is not listed. The page on the unlisted site tries everything a page can send
without the gateway's consent — a JSON ``fetch`` (preflighted), a ``no-cors`` ``text/plain``
fetch and a form post (both sent without asking), aimed at the proxy, the admin API and the
dashboard's login — and nothing runs: no upstream call, no action call, no execution record.
The shop's page, with the agent's public widget key, chats through real CORS.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import WIDGET_KEY, LiveGateway, WebPages, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

if missing() is None:
    from playwright.sync_api import Browser, Page

CHAT = {"model": "widget", "messages": [{"role": "user", "content": "Where is order A-12345?"}]}

# Every request a page may try, run in the page; each entry reports what the page could see.
TRIES = """async ({gateway, chat, key}) => {
  const seen = {};
  const attempt = async (name, url, init) => {
    try {
      const r = await fetch(gateway + url, init);
      seen[name] = r.type === "opaque" ? "opaque" : r.status;
    } catch (e) {
      seen[name] = "blocked: " + e.name;
    }
  };
  const json = {"Content-Type": "application/json", "Authorization": "Bearer " + key};
  await attempt("json_chat", "/v1/chat/completions",
                {method: "POST", headers: json, body: JSON.stringify(chat)});
  await attempt("plain_chat", "/v1/chat/completions",
                {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                 body: JSON.stringify(chat)});
  await attempt("plain_admin", "/api/actions",
                {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                 body: JSON.stringify({name: "x", kind: "http"})});
  await attempt("read_models", "/v1/models", {headers: {"Authorization": "Bearer " + key}});
  return seen;
}"""

# A form post that smuggles JSON as text/plain: the classic cross-site request forgery.
FORM_POST = """({action, chat}) => {
  const text = JSON.stringify(chat);
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  form.enctype = "text/plain";
  const field = document.createElement("input");
  field.name = text.slice(0, -2) + ',"x":"';
  field.value = '"}';
  form.appendChild(field);
  document.body.appendChild(form);
  form.submit();
}"""


def _records(gw: LiveGateway) -> list[Any]:
    async def read() -> list[Any]:
        store = gw.services.runtime.logstore
        await store.flush()
        return (await store.query(limit=1000))[0]

    result: list[Any] = gw.run(read())
    return result


def _gateway_statuses(page: Page, gw: LiveGateway) -> dict[str, list[tuple[str, int]]]:
    """Every answer the gateway sent to this page, by path, as (method, status).

    Chromium does not report CORS preflights to Playwright: a request whose preflight was
    refused is never sent, so it is not listed at all.
    """
    seen: dict[str, list[tuple[str, int]]] = {}

    def on_response(response: Any) -> None:
        if response.url.startswith(gw.base_url):
            path = response.url[len(gw.base_url) :]
            seen.setdefault(path, []).append((response.request.method, response.status))

    page.on("response", on_response)
    return seen


def _form_post(page: Page, action: str) -> int:
    with page.expect_navigation() as navigation:
        page.evaluate(FORM_POST, {"action": action, "chat": CHAT})
    response = navigation.value
    assert response is not None
    return int(response.status)


def test_a_page_on_another_site_makes_the_gateway_run_nothing(
    browser: Browser, live_gateway: LiveGateway, web_pages: WebPages
) -> None:
    gw = live_gateway
    before = (len(gw.upstream.requests), len(gw.api.received), len(_records(gw)))
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    statuses = _gateway_statuses(page, gw)
    page.goto(web_pages.elsewhere)

    seen = page.evaluate(TRIES, {"gateway": gw.base_url, "chat": CHAT, "key": WIDGET_KEY})
    # The JSON fetch is preflighted and the preflight refused; the page never sees an answer.
    assert seen["json_chat"] == "blocked: TypeError"
    assert seen["read_models"] == "blocked: TypeError"
    # Simple requests are sent without asking: the gateway itself refused them.
    assert seen["plain_chat"] == seen["plain_admin"] == "opaque"
    assert statuses == {"/v1/chat/completions": [("POST", 403)], "/api/actions": [("POST", 403)]}

    assert _form_post(page, f"{gw.base_url}/v1/chat/completions") == 403
    page.goto(web_pages.elsewhere)
    assert _form_post(page, f"{gw.base_url}/login") == 403
    context.close()

    after = (len(gw.upstream.requests), len(gw.api.received), len(_records(gw)))
    assert after == before  # no upstream call, no action call, no execution record


def test_the_shop_page_chats_through_cors_with_the_widget_key(
    browser: Browser, live_gateway: LiveGateway, web_pages: WebPages
) -> None:
    gw = live_gateway
    gw.upstream.script(
        [
            {"tool_calls": [{"name": "look_up_order", "arguments": {"order_number": "A-12345"}}]},
            {"content": "Order A-12345 has shipped."},
        ]
    )
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    statuses = _gateway_statuses(page, gw)
    page.goto(web_pages.shop)
    answer = page.evaluate(
        """async ({gateway, chat, key}) => {
          const r = await fetch(gateway + "/v1/chat/completions", {
            method: "POST",
            headers: {"Content-Type": "application/json", "Authorization": "Bearer " + key},
            body: JSON.stringify(chat),
          });
          return {status: r.status, conversation: r.headers.get("x-actiongate-conversation-id"),
                  body: await r.json()};
        }""",
        {"gateway": gw.base_url, "chat": CHAT, "key": WIDGET_KEY},
    )
    assert statuses["/v1/chat/completions"] == [("POST", 200)]  # after an answered preflight
    assert answer["status"] == 200, json.dumps(answer)
    assert answer["body"]["choices"][0]["message"]["content"] == "Order A-12345 has shipped."
    conversation = answer["body"]["actiongate"]["conversation_id"]
    assert answer["conversation"] == conversation  # an exposed header the page can read
    records = [r for r in _records(gw) if r.conversation_id == conversation]
    assert [(r.action, r.outcome, r.agent_id, r.injected) for r in records] == [
        ("look_up_order", "success", "widget", True)
    ]
    assert gw.api.last().path.endswith("/orders/A-12345")

    # The same page may not send a body that is not JSON, even from an allowed origin.
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.evaluate(
            """async ({gateway, chat}) => {
              await fetch(gateway + "/v1/chat/completions", {method: "POST", mode: "no-cors",
                headers: {"Content-Type": "text/plain"}, body: JSON.stringify(chat)});
            }""",
            {"gateway": gw.base_url, "chat": CHAT},
        )
    assert refused.value.status == 415
    context.close()
