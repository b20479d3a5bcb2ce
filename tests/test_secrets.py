"""The encrypted secret store: write-only through the admin API, encrypted at rest, used by
actions at once, redacted everywhere."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fresh_process import run_script
from tests.support.gateway import CRM_SECRET, Gateway, running_gateway

TOKEN = "admin-SECRET-token-77"
NEW_VALUE = "stored-SECRET-value-5f1e"


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(tmp_path) as gateway:
        yield gateway


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def test_set_use_list_and_delete(gw: Gateway, tmp_path: Path) -> None:
    client = gw.client
    # A stored value wins over the file's: the next call uses it, no restart.
    r = await client.put("/api/secrets/CRM", json={"value": NEW_VALUE}, headers=auth())
    assert r.status_code == 204
    r = await client.post(
        "/api/actions/get_customer_account/test",
        headers=auth(),
        json={"variables": {"lead.email": "a@b.c"}},
    )
    assert r.json()["outcome"] == "success"
    assert gw.api.last().headers["Authorization"] == f"Bearer {NEW_VALUE}"
    assert (
        NEW_VALUE not in r.text and r.json()["request"]["headers"]["Authorization"] == "[REDACTED]"
    )

    listing = (await client.get("/api/secrets", headers=auth())).json()
    assert {"name": "CRM", "source": "store"}.items() <= listing["items"][0].items()
    assert NEW_VALUE not in str(listing) and CRM_SECRET not in str(listing)

    raw = b"".join(p.read_bytes() for p in tmp_path.glob("gw.db*"))  # noqa: ASYNC240
    assert NEW_VALUE.encode() not in raw  # encrypted at rest, and never logged

    assert (await client.delete("/api/secrets/CRM", headers=auth())).status_code == 204
    await client.post(
        "/api/actions/get_customer_account/test",
        headers=auth(),
        json={"variables": {"lead.email": "a@b.c"}},
    )
    assert gw.api.last().headers["Authorization"] == f"Bearer {CRM_SECRET}"  # the file's again
    assert (await client.delete("/api/secrets/CRM", headers=auth())).status_code == 404


async def test_a_new_secret_can_back_a_new_action(gw: Gateway) -> None:
    client = gw.client
    await client.put("/api/secrets/STOCK_KEY", json={"value": NEW_VALUE}, headers=auth())
    action = {
        "name": "Stock",
        "url": f"{gw.api.base_url}/echo/stock",
        "auth": {"type": "api_key", "name": "X-Key", "value": "{{secrets.STOCK_KEY}}"},
    }
    assert (await client.post("/api/actions", json=action, headers=auth())).status_code == 201
    r = await client.post("/api/actions/stock/test", headers=auth(), json={})
    assert r.json()["outcome"] == "success" and gw.api.last().headers["X-Key"] == NEW_VALUE


@pytest.mark.parametrize(
    ("name", "body", "param"),
    [
        ("bad name", {"value": "x"}, "name"),
        ("OK", {"value": ""}, "value"),
        ("OK", {"value": "x", "extra": 1}, "extra"),
        ("OK", {"value": "x" * 9000}, "value"),
    ],
)
async def test_invalid_writes(gw: Gateway, name: str, body: dict[str, object], param: str) -> None:
    r = await gw.client.put(f"/api/secrets/{name}", json=body, headers=auth())
    assert r.status_code == 422 and param in r.json()["error"]["param"]


async def test_secret_routes_need_the_admin_token(gw: Gateway) -> None:
    r = await gw.client.put("/api/secrets/X", json={"value": "v"})
    assert r.status_code == 401
    assert (await gw.client.get("/api/secrets")).status_code == 401


async def test_internal_rows_cannot_be_overwritten_or_deleted(gw: Gateway) -> None:
    r = await gw.client.put(
        "/api/secrets/_admin_token_sha256", json={"value": "00"}, headers=auth()
    )
    assert r.status_code == 422
    r = await gw.client.delete("/api/secrets/_admin_token_sha256", headers=auth())
    assert r.status_code == 404
    assert (await gw.client.get("/api/actions", headers=auth())).status_code == 200


async def test_a_secret_too_short_to_redact_is_refused_and_never_stored(gw: Gateway) -> None:
    r = await gw.client.put("/api/secrets/SHORT", json={"value": "abc"}, headers=auth())
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "value"
    assert r.json()["error"]["message"] == (
        "secret 'SHORT': the value is shorter than 4 characters; a secret that short cannot be "
        "redacted from logs"
    )
    names = [
        s["name"] for s in (await gw.client.get("/api/secrets", headers=auth())).json()["items"]
    ]
    assert "SHORT" not in names


ONLY_WHEN_USED = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from tests.support.gateway import running_gateway

    os.environ["ACTIONGATE_ADMIN_TOKEN"] = "admin-SECRET-token-77"
    auth = {"Authorization": "Bearer admin-SECRET-token-77"}

    async def main():
        async with running_gateway(Path(sys.argv[1])) as gw:
            gw.upstream.script([{"content": "Hello."}])
            assert (await gw.chat(messages=[{"role": "user", "content": "hi"}])).status_code == 200
            print("cryptography" in sys.modules)
            body = {"value": "stored-SECRET-value-5f1e"}
            assert (await gw.client.put("/api/secrets/K1", json=body, headers=auth)).is_success
            print("cryptography" in sys.modules)

    asyncio.run(main())
    """
)


def test_openssl_is_loaded_only_once_a_secret_is_stored(tmp_path: Path) -> None:
    # cryptography's OpenSSL bindings take ~8 MB of every worker: a gateway that serves
    # completions with no stored secret and no dashboard login never loads them.
    out = run_script(ONLY_WHEN_USED, str(tmp_path))
    assert out.split() == ["False", "True"]
