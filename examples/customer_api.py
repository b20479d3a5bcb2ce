"""The sample customer API that the offline demo's actions (``examples/demo.yaml``) call.

In-memory customers and orders, checked credentials like a real API, and a record of every
request received (``app[RECEIVED]``, also ``app["received"]``) for tests::

    GET  /customers?email=            Bearer CRM key             the customer's account
    GET  /orders/{order_number}       X-Api-Key: orders key      status, items, delivery date
    POST /oauth/token                 client credentials         bearer token, expires_in 3600
    POST /refunds                     OAuth token                refund of one order
    POST /refunds/latest              Bearer CRM key             refund of the latest order
    POST /returns                     Bearer CRM key             a return (RMA) with a label URL

Run it with ``python -m examples.customer_api --port 8092``.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "CREDENTIALS",
    "RECEIVED",
    "CustomerAPI",
    "Received",
    "create_app",
    "main",
    "running_customer_api",
]

CREDENTIALS = {
    "crm_key": "demo-crm-key",
    "orders_key": "demo-orders-key",
    "client_id": "demo-billing-client",
    "client_secret": "demo-billing-secret",
}
"""The demo secret values; ``examples/demo.yaml`` holds the same ones."""
TOKEN_LIFETIME_S = 3600
REFUND_REASONS = ("damaged", "missing", "not_as_described")

CUSTOMERS: dict[str, dict[str, Any]] = {
    "jane@example.com": {
        "id": "cus_1001",
        "name": "Jane Doe",
        "email": "jane@example.com",
        "plan": "Pro",
        "customer_since": "2021-04-12",
        "orders": ["A-10023", "A-10024"],
    },
    "sam@example.com": {
        "id": "cus_1002",
        "name": "Sam Lee",
        "email": "sam@example.com",
        "plan": "Free",
        "customer_since": "2023-11-02",
        "orders": ["A-10031"],
    },
}
ORDERS: dict[str, dict[str, Any]] = {
    "A-10023": {
        "order_number": "A-10023",
        "customer_email": "jane@example.com",
        "status": "shipped",
        "items": [{"name": "Ceramic mug", "quantity": 2, "price": 12.5}],
        "total": 25.0,
        "placed_at": "2024-06-01",
        "delivery_date": "2024-06-14",
    },
    "A-10024": {
        "order_number": "A-10024",
        "customer_email": "jane@example.com",
        "status": "processing",
        "items": [{"name": "Tea sampler", "quantity": 1, "price": 18.0}],
        "total": 18.0,
        "placed_at": "2024-06-10",
        "delivery_date": "2024-06-20",
    },
    "A-10031": {
        "order_number": "A-10031",
        "customer_email": "sam@example.com",
        "status": "delivered",
        "items": [{"name": "Desk lamp", "quantity": 1, "price": 39.0}],
        "total": 39.0,
        "placed_at": "2024-05-20",
        "delivery_date": "2024-05-27",
    },
}


@dataclass
class Received:
    """One request as the API saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


RECEIVED = web.AppKey("received", list[Received])


@dataclass
class _State:
    credentials: dict[str, str]
    tokens: dict[str, float] = field(default_factory=dict)
    """Issued OAuth access tokens and when they expire (``time.monotonic``)."""
    refunds: list[dict[str, Any]] = field(default_factory=list)
    returns: list[dict[str, Any]] = field(default_factory=list)


_STATE = web.AppKey("customer_api_state", _State)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _unauthorized(message: str = "missing or invalid credentials") -> web.Response:
    return web.json_response(
        {"error": message}, status=401, headers={"WWW-Authenticate": 'Bearer realm="demo"'}
    )


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _crm_auth(handler: Handler) -> Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        if not _same(_bearer(request), request.app[_STATE].credentials["crm_key"]):
            return _unauthorized()
        return await handler(request)

    return checked


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.text() or "null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@web.middleware
async def _record(request: web.Request, handler: Handler) -> web.StreamResponse:
    body = await request.text()
    item = Received(request.method, request.path, dict(request.query), dict(request.headers), body)
    request.app[RECEIVED].append(item)
    return await handler(request)


@_crm_auth
async def _customer(request: web.Request) -> web.Response:
    email = request.query.get("email", "").strip().lower()
    if not email:
        return _error(400, "the email query parameter is required")
    customer = CUSTOMERS.get(email)
    if customer is None:
        return _error(404, f"no customer with email {email}")
    return web.json_response(customer)


async def _order(request: web.Request) -> web.Response:
    if not _same(request.headers.get("X-Api-Key"), request.app[_STATE].credentials["orders_key"]):
        return _unauthorized()
    number = request.match_info["order_number"]
    order = ORDERS.get(number)
    email = request.headers.get("X-Customer-Email", "").strip().lower()
    # Like a real API, do not reveal that an order exists to someone it does not belong to.
    if order is None or (email and email != order["customer_email"]):
        return _error(404, f"order {number} not found")
    return web.json_response(order)


async def _token(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    form = await request.post()
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":  # client_secret_basic, RFC 6749 §2.3.1
        try:
            client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            client_id = client_secret = None
    if form.get("grant_type") != "client_credentials":
        return web.json_response({"error": "unsupported_grant_type"}, status=400)
    valid_id = isinstance(client_id, str) and _same(client_id, state.credentials["client_id"])
    valid_secret = isinstance(client_secret, str) and _same(
        client_secret, state.credentials["client_secret"]
    )
    if not (valid_id and valid_secret):
        return web.json_response({"error": "invalid_client"}, status=401)
    token = f"demo-token-{secrets.token_urlsafe(16)}"
    state.tokens[token] = time.monotonic() + TOKEN_LIFETIME_S
    body = {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S}
    body["scope"] = str(form.get("scope") or "refunds:write")
    return web.json_response(body)


def _new_refund(order: dict[str, Any], reason: str, amount: float, source: str) -> dict[str, Any]:
    return {
        "refund_id": f"re_{secrets.token_hex(6)}",
        "status": "pending",
        "order_number": order["order_number"],
        "amount": amount,
        "currency": "USD",
        "reason": reason,
        "source": source,
        # A payment-processor style field: demo.yaml redacts card.number and card.expiry.
        "card": {"brand": "visa", "number": "4242424242424242", "expiry": "12/29"},
    }


async def _refund(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    token = _bearer(request)
    if token is None or state.tokens.get(token, 0.0) < time.monotonic():
        return _unauthorized("invalid or expired access token")
    body = await _json_body(request)
    if body is None:
        return _error(400, "expected a JSON object")
    order = ORDERS.get(str(body.get("order_number", "")))
    if order is None:
        return _error(404, f"order {body.get('order_number')} not found")
    if body.get("reason") not in REFUND_REASONS:
        return _error(422, f"reason must be one of {', '.join(REFUND_REASONS)}")
    try:
        amount = float(body.get("amount") or order["total"])
    except (TypeError, ValueError):
        return _error(422, "amount must be a number")
    if not 0 < amount <= order["total"]:
        return _error(422, f"amount must be between 0 and the order total {order['total']}")
    refund = _new_refund(order, str(body["reason"]), amount, "chat")
    state.refunds.append(refund)
    return web.json_response(refund, status=201)


@_crm_auth
async def _refund_latest(request: web.Request) -> web.Response:
    body = await _json_body(request) or {}
    customer = CUSTOMERS.get(str(body.get("email", "")).lower())
    if customer is None:
        return _error(404, "no customer with that email")
    order = ORDERS[customer["orders"][-1]]
    refund = _new_refund(order, "requested", order["total"], str(body.get("source") or "api"))
    request.app[_STATE].refunds.append(refund)
    return web.json_response(refund, status=201)


@_crm_auth
async def _return(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if body is None or not body.get("order_number") or not body.get("email"):
        return _error(422, "email and order_number are required")
    order = ORDERS.get(str(body["order_number"]))
    if order is None or order["customer_email"] != str(body["email"]).lower():
        return _error(404, f"order {body['order_number']} not found for {body['email']}")
    rma = f"RMA-{secrets.token_hex(3).upper()}"
    item = {
        "return_id": rma,
        "status": "label_sent",
        "order_number": order["order_number"],
        "reason": body.get("reason"),
        "label_url": f"https://returns.example.com/labels/{rma}.pdf",
    }
    request.app[_STATE].returns.append(item)
    return web.json_response(item, status=201)


def create_app(
    *,
    crm_key: str = CREDENTIALS["crm_key"],
    orders_key: str = CREDENTIALS["orders_key"],
    client_id: str = CREDENTIALS["client_id"],
    client_secret: str = CREDENTIALS["client_secret"],
) -> web.Application:
    """Build the sample API, accepting these credentials.

    Args:
        crm_key: bearer token for ``/customers``, ``/returns`` and ``/refunds/latest``.
        orders_key: ``X-Api-Key`` value for ``/orders/{order_number}``.
        client_id: OAuth client id for ``/oauth/token``.
        client_secret: OAuth client secret for ``/oauth/token``.
    """
    app = web.Application(middlewares=[_record])
    received: list[Received] = []
    app[RECEIVED] = received
    with warnings.catch_warnings():
        # A plain string key too, for callers that know the app by ``app["received"]``.
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["received"] = received
    credentials = dict(
        crm_key=crm_key, orders_key=orders_key, client_id=client_id, client_secret=client_secret
    )
    app[_STATE] = _State(credentials)
    app.router.add_get("/customers", _customer)
    app.router.add_get("/orders/{order_number}", _order)
    app.router.add_post("/oauth/token", _token)
    app.router.add_post("/refunds", _refund)
    app.router.add_post("/refunds/latest", _refund_latest)
    app.router.add_post("/returns", _return)
    return app


@dataclass
class CustomerAPI:
    """A running sample API, as yielded by :func:`running_customer_api`."""

    base_url: str
    """``http://host:port``, without a trailing slash."""
    app: web.Application

    @property
    def received(self) -> list[Received]:
        """Every request received, oldest first."""
        return self.app[RECEIVED]


@asynccontextmanager
async def running_customer_api(
    host: str = "127.0.0.1", port: int = 0, **kw: str
) -> AsyncIterator[CustomerAPI]:
    """Serve :func:`create_app` (``kw`` are its credentials) on ``host:port`` (0: a free port)."""
    app = create_app(**kw)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield CustomerAPI(f"http://{bound_host}:{bound_port}", app)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """``python -m examples.customer_api --port 8092``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092)
    args = parser.parse_args(argv)
    print(f"sample customer API on http://{args.host}:{args.port}", flush=True)
    web.run_app(create_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
