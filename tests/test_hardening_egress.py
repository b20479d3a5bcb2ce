"""Issue 12, egress items: the deny table audit (5), save-time refusal of literal private and
metadata hosts (6), the port policy (7) and URLs the URL parser refuses (8)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import gateway.net.egress as egress
from gateway.cli.main import main
from gateway.definitions.actions import HttpAction
from gateway.definitions.config import parse_action, parse_config
from gateway.definitions.validation import validate_actions
from gateway.engine.context import Conversation
from gateway.engine.executor import Executor
from gateway.errors import ConfigError, DefinitionError, EgressBlocked
from gateway.net.egress import EgressPolicy, Lookup
from gateway.net.outbound import Outbound
from gateway.redaction import Redactor
from gateway.stores.db import migrate
from gateway.stores.engines import create_engine
from gateway.stores.logs import LogStore
from tests.support.action_api import running_api
from tests.support.gateway import Gateway, running_gateway

TOKEN = "admin-SECRET-token-42"
POLICY = EgressPolicy()


def answering(mapping: dict[str, Sequence[str]]) -> tuple[Lookup, list[tuple[str, int]]]:
    """A fake lookup by name, and its call log."""
    calls: list[tuple[str, int]] = []

    async def lookup(host: str, port: int) -> Sequence[str]:
        calls.append((host, port))
        return mapping[host]

    return lookup, calls


# --- item 5: the deny table against the IANA registries and the clouds' metadata -------------

# One address per entry of the IANA IPv4 and IPv6 Special-Purpose Address Registries that is not
# an IPv4-in-IPv6 form (those are unpacked and judged as IPv4), plus cloud metadata addresses.
REGISTRY_AND_METADATA = [
    "0.0.0.1",
    "10.1.2.3",
    "100.64.0.1",
    "127.0.0.53",
    "169.254.1.1",
    "172.16.0.1",
    "192.0.0.1",
    "192.0.0.9",
    "192.0.0.10",
    "192.0.0.170",
    "192.0.2.1",
    "192.31.196.1",
    "192.52.193.1",
    "192.88.99.1",
    "192.168.0.1",
    "192.175.48.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "64:ff9b:1::1",
    "100::1",
    "100:0:0:1::1",
    "2001:1::1",
    "2001:1::2",
    "2001:1::3",
    "2001:2::1",
    "2001:3::1",
    "2001:4:112::1",
    "2001:10::1",
    "2001:20::1",
    "2001:30::1",
    "2001:db8::1",
    "2620:4f:8000::1",
    "3fff::1",
    "5f00::1",
    "fc00::1",
    "fe80::1",
    "ff02::1",
    # cloud metadata: AWS/GCP/Azure/OpenStack/DO, AWS ECS, Azure WireServer, Alibaba, Oracle,
    # Scaleway, AWS IPv6, GCP IPv6, Oracle IPv6
    "169.254.169.254",
    "169.254.170.2",
    "168.63.129.16",
    "100.100.100.200",
    "192.0.0.192",
    "169.254.42.42",
    "fd00:ec2::254",
    "fd20:ce::254",
    "fd00:c1::a9fe:a9fe",
]


@pytest.mark.parametrize("address", REGISTRY_AND_METADATA)
def test_every_registry_entry_and_metadata_address_is_denied(address: str) -> None:
    assert POLICY.check_address(address) is not None
    with pytest.raises(EgressBlocked):
        POLICY.check_host_name(address)


@pytest.mark.parametrize(
    "address", ["168.63.129.16", "::ffff:168.63.129.16", "64:ff9b::a83f:8110", "2002:a83f:8110::1"]
)
def test_azure_wireserver_is_blocked_in_every_spelling(address: str) -> None:
    reason = POLICY.check_address(address)
    assert reason is not None and "Azure WireServer" in reason


async def test_azure_wireserver_by_name_is_blocked_before_any_connection() -> None:
    lookup, calls = answering({"wire.example.com": ["168.63.129.16"]})
    with pytest.raises(EgressBlocked) as info:
        await POLICY.resolve("wire.example.com", 80, lookup=lookup)
    assert info.value.reason == (
        "resolves to 168.63.129.16: cloud metadata (Azure WireServer 168.63.129.16)"
    )
    assert calls == [("wire.example.com", 80)]


@pytest.mark.parametrize(
    "host",
    [
        "metadata.tencentyun.com",
        "api.metadata.cloud.ibm.com",
        "metadata.platformequinix.com",
        "rancher-metadata",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "printer.local",
        "nas.home.arpa",
    ],
)
async def test_metadata_and_private_names_are_refused_before_lookup(host: str) -> None:
    lookup, calls = answering({host: ["93.184.216.34"]})
    with pytest.raises(EgressBlocked, match="internal host name"):
        await POLICY.resolve(host, 80, lookup=lookup)
    assert calls == []


@pytest.mark.parametrize(
    ("address", "shown"),
    [("10.0.0.1", "10.0.0.1"), ("2001:100::1", "2001:100::1"), ("::ffff:10.0.0.1", "10.0.0.1")],
)
def test_not_is_global_is_a_second_check(
    monkeypatch: pytest.MonkeyPatch, address: str, shown: str
) -> None:
    # With the table emptied, the stdlib's is_global still refuses (2001::/23's unassigned
    # space has no row of its own).
    monkeypatch.setattr(egress, "DENY_TABLE", ())
    reason = POLICY.check_address(address)
    assert reason is not None
    assert reason.startswith(f"not a globally reachable address ({shown}, special-purpose)")
    assert POLICY.check_address("93.184.216.34") is None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LogStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    await migrate(engine)
    log = LogStore(engine, Redactor())
    await log.start()
    yield log
    await log.close()
    await engine.dispose()


def conversation() -> Conversation:
    return Conversation(id="c1", agent_id="support", lead={}, message="hello")


def http_action(url: str) -> HttpAction:
    action = parse_action({"name": "Probe", "url": url, "retries": 0})
    assert isinstance(action, HttpAction)
    return action


async def test_a_call_to_the_wireserver_is_a_blocked_record(store: LogStore) -> None:
    outbound = Outbound(EgressPolicy())
    try:
        executor = Executor(outbound, logstore=store)
        result = await executor.execute_action(
            http_action("http://168.63.129.16/machine?comp=goalstate"), conversation(), "{}"
        )
    finally:
        await outbound.close()
    assert result.outcome == "blocked"
    assert result.content == (
        "Action probe was not run: its destination is not allowed by the gateway's network policy."
    )
    await store.flush()
    [record] = (await store.query(outcome="blocked"))[0]
    assert record.error == (
        "egress to '168.63.129.16' blocked: cloud metadata (Azure WireServer 168.63.129.16)"
    )


# --- item 6: literal private and metadata hosts are refused when saved -------------------------


def saved(url: str, allow: Sequence[str] = (), **fields: Any) -> None:
    action = parse_action({"name": "Probe", "url": url, **fields})
    validate_actions([action], destinations=EgressPolicy(allow).save_time_refusal)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://10.0.0.5/orders",
            "action 'Probe': url: the egress policy refuses 10.0.0.5:80: private network "
            "(10.0.0.0/8); add '10.0.0.5:80' (or '10.0.0.5' for every port) to egress.allow "
            "to open it",
        ),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "action 'Probe': url: the egress policy refuses metadata.google.internal:80: internal "
            "host name 'metadata.google.internal'; add 'metadata.google.internal:80' (or "
            "'metadata.google.internal' for every port) to egress.allow to open it",
        ),
        (
            "https://[fd00:ec2::254]/latest/meta-data/",
            "action 'Probe': url: the egress policy refuses [fd00:ec2::254]:443: unique local "
            "(fc00::/7; AWS metadata fd00:ec2::254); add '[fd00:ec2::254]:443' (or "
            "'[fd00:ec2::254]' for every port) to egress.allow to open it",
        ),
        (
            "http://2130706433/",
            "action 'Probe': url: the egress policy refuses 2130706433:80: non-canonical numeric "
            "host; write an IPv4 address as four decimal numbers, e.g. 10.0.0.5",
        ),
    ],
)
def test_literal_private_and_metadata_hosts_are_refused_at_save(url: str, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        saved(url)
    assert str(info.value) == message
    assert info.value.field == "url"


def test_an_allow_entry_opens_the_literal_host_at_save() -> None:
    saved("http://10.0.0.5/orders", allow=["10.0.0.5"])
    saved("http://10.0.0.5:8092/orders", allow=["10.0.0.5:8092"])
    saved("http://metadata.google.internal/", allow=["metadata.google.internal"])
    with pytest.raises(DefinitionError, match="private network"):
        saved("http://10.0.0.5:8093/orders", allow=["10.0.0.5:8092"])


def test_oauth_token_url_is_checked_but_a_navigate_link_is_not() -> None:
    auth = {
        "type": "oauth2_client_credentials",
        "token_url": "http://169.254.169.254/token",
        "client_id": "id",
        "client_secret": "secret-value",
    }
    with pytest.raises(DefinitionError) as info:
        saved("https://api.example.com/x", auth=auth)
    assert info.value.field == "auth.token_url" and "link-local" in info.value.reason
    # The customer's browser opens a link: its own network, not the gateway's.
    button = parse_action(
        {
            "name": "Router",
            "type": "button",
            "label": "Open",
            "on_click": {"navigate": "http://192.168.1.1/"},
        }
    )
    validate_actions([button], destinations=POLICY.save_time_refusal)


def test_validate_refuses_a_literal_private_host_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "probe.yaml"
    path.write_text(
        "actions:\n"
        "  - name: Probe\n"
        "    url: http://10.0.0.5/orders\n"
        "    when_not_to_use: Never for refunds.\n"
    )
    assert main(["validate", str(path)]) == 1
    _, err = capsys.readouterr()
    assert err == (
        f"error: {path}: line 3: action 'Probe': url: the egress policy refuses 10.0.0.5:80: "
        "private network (10.0.0.0/8); add '10.0.0.5:80' (or '10.0.0.5' for every port) to "
        "egress.allow to open it\n"
    )
    path.write_text(path.read_text() + "egress:\n  allow: ['10.0.0.5']\n")
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "OK: 1 action, 0 agents\n" and err == ""


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(tmp_path) as gateway:
        yield gateway


async def test_admin_api_refuses_metadata_hosts_and_stores_nothing(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for url in ("http://169.254.169.254/latest/meta-data/", "http://metadata.goog/"):
        body = {"name": "Probe", "url": url, "when_not_to_use": "Never."}
        r = await gw.client.post("/api/actions", json=body, headers=headers)
        assert r.status_code == 422
        error = r.json()["error"]
        assert error["param"] == "url"
        assert error["message"].startswith("action 'Probe': url: the egress policy refuses ")
        assert "egress.allow" in error["message"]
    names = [
        a["tool_name"]
        for a in (await gw.client.get("/api/actions", headers=headers)).json()["items"]
    ]
    assert "probe" not in names
    # The gateway's egress.allow (127.0.0.1) opens the local API, on its port too.
    body = {"name": "Probe", "url": f"{gw.api.base_url}/echo/x", "when_not_to_use": "Never."}
    assert (await gw.client.post("/api/actions", json=body, headers=headers)).status_code == 201


# --- item 7: ports -------------------------------------------------------------------------

PORT_REASON = (
    "port 6379 is not allowed (hosts not named in egress.allow are reached only on ports 80, "
    "443; egress.ports changes the list)"
)


async def test_a_public_host_is_reached_only_on_80_and_443() -> None:
    lookup, _ = answering({"api.example.com": ["93.184.216.34"]})
    for port in (80, 443):
        assert await POLICY.resolve("api.example.com", port, lookup=lookup)
    with pytest.raises(EgressBlocked) as info:
        await POLICY.resolve("api.example.com", 6379, lookup=lookup)
    assert info.value.reason == PORT_REASON
    with pytest.raises(EgressBlocked, match="port 6379 is not allowed"):
        POLICY.check_host_name("93.184.216.34", 6379)
    assert POLICY.check_address("93.184.216.34", 6379) == PORT_REASON


async def test_egress_ports_changes_the_list() -> None:
    policy = EgressPolicy(ports=[80, 443, 8443])
    lookup, _ = answering({"api.example.com": ["93.184.216.34"]})
    assert await policy.resolve("api.example.com", 8443, lookup=lookup)
    with pytest.raises(EgressBlocked, match="only on ports 80, 443, 8443"):
        await policy.resolve("api.example.com", 6379, lookup=lookup)
    config = parse_config({"egress": {"ports": [80, 443, 8443]}}, environ={})
    assert config.egress.ports == [80, 443, 8443]
    for bad in (0, 65536, "443"):
        with pytest.raises(ConfigError, match=r"egress\.ports"):
            parse_config({"egress": {"ports": [bad]}}, environ={})


async def test_an_allow_entry_with_a_port_opens_only_that_port() -> None:
    policy = EgressPolicy(allow=["10.0.0.5:8092", "api.example.com:6379", "[fd00::5]:9000"])
    assert policy.check_address("10.0.0.5", 8092) is None
    assert policy.check_address("10.0.0.5", 8093) == "private network (10.0.0.0/8)"
    assert policy.check_address("10.0.0.5") == "private network (10.0.0.0/8)"  # port unknown
    assert policy.check_address("fd00::5", 9000) is None
    policy.check_host_name("api.example.com", 6379)
    lookup, _ = answering({"api.example.com": ["10.9.9.9"]})
    assert await policy.resolve("api.example.com", 6379, lookup=lookup)  # named: every check off
    with pytest.raises(EgressBlocked, match=r"10\.0\.0\.0/8"):
        await policy.resolve("api.example.com", 443, lookup=lookup)  # not named for 443


async def test_an_allow_entry_without_a_port_opens_every_port_as_before() -> None:
    policy = EgressPolicy(allow=["127.0.0.1", "crm.corp.internal"])
    assert policy.check_address("127.0.0.1", 8092) is None
    policy.check_host_name("127.0.0.1", 6379)
    lookup, _ = answering({"crm.corp.internal": ["10.0.0.7"], "rebind.test": ["127.0.0.1"]})
    assert await policy.resolve("crm.corp.internal", 5432, lookup=lookup)
    # A name resolving only to addresses the entry opens is reached on every port too.
    assert await policy.resolve("rebind.test", 8092, lookup=lookup)


def test_save_time_refuses_a_port_not_on_the_list() -> None:
    with pytest.raises(DefinitionError) as info:
        saved("https://api.example.com:6379/")
    assert info.value.reason == (
        f"the egress policy refuses api.example.com:6379: {PORT_REASON}; add "
        "'api.example.com:6379' to egress.allow or 6379 to egress.ports to open it"
    )
    saved("https://api.example.com:6379/", allow=["api.example.com:6379"])
    saved("https://api.example.com:443/")


async def test_a_call_on_a_refused_port_is_a_blocked_record_and_never_connects(
    store: LogStore,
) -> None:
    lookup, calls = answering({"api.example.com": ["93.184.216.34"]})
    outbound = Outbound(EgressPolicy(), lookup=lookup)
    try:
        executor = Executor(outbound, logstore=store)
        result = await executor.execute_action(
            http_action("https://api.example.com:6379/"), conversation(), "{}"
        )
    finally:
        await outbound.close()
    assert result.outcome == "blocked"
    assert calls == [("api.example.com", 6379)]  # refused at the lookup: no socket opened
    await store.flush()
    [record] = (await store.query(outcome="blocked"))[0]
    assert record.error == f"egress to 'api.example.com' blocked: {PORT_REASON}"


async def test_a_named_host_with_a_port_entry_reaches_the_local_api() -> None:
    async with running_api() as api:
        port = int(api.base_url.rsplit(":", 1)[1])
        lookup, _ = answering({"crm.test": ["127.0.0.1"]})
        outbound = Outbound(EgressPolicy(allow=[f"crm.test:{port}"]), lookup=lookup)
        try:
            executor = Executor(outbound)
            ok = await executor.execute_action(
                http_action(f"http://crm.test:{port}/echo/x"), conversation(), "{}"
            )
            refused = await executor.execute_action(
                http_action(f"http://crm.test:{port + 1}/echo/x"), conversation(), "{}"
            )
        finally:
            await outbound.close()
    assert ok.outcome == "success"
    assert [r.path for r in api.received] == ["/echo/x"]
    assert refused.outcome == "blocked"


async def run_local(allow: list[str], port_offset: int = 0) -> tuple[str, int]:
    """Call the local API's /echo/x by IP literal; return the outcome and requests received."""
    async with running_api() as api:
        host, port = api.base_url.rsplit(":", 1)
        entries = [entry.format(port=port) for entry in allow]
        outbound = Outbound(EgressPolicy(allow=entries))
        try:
            result = await Executor(outbound).execute_action(
                http_action(f"{host}:{int(port) + port_offset}/echo/x"), conversation(), "{}"
            )
        finally:
            await outbound.close()
        return result.outcome, len(api.received)


async def test_an_ip_literal_entry_with_another_port_does_not_open_it() -> None:
    assert await run_local(["127.0.0.1:1"]) == ("blocked", 0)
    assert await run_local(["127.0.0.1"]) == ("success", 1)


async def test_an_ip_literal_entry_with_its_port_opens_it_at_call_time() -> None:
    assert await run_local(["127.0.0.1:{port}"]) == ("success", 1)


async def test_the_runtime_policy_uses_egress_ports(tmp_path: Path) -> None:
    from gateway.engine.runtime import open_runtime

    config = parse_config(
        {"database": f"sqlite:///{tmp_path / 'r.db'}", "egress": {"ports": [8443]}}, environ={}
    )
    runtime = await open_runtime(config)
    try:
        assert runtime.outbound.policy.ports == frozenset({8443})
    finally:
        await runtime.close()


# --- item 8: URLs the URL parser refuses ----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1\\.api.example.com/",
        "http://api example.com/",
        "http://exa%41mple.com/",
        "http://ex\u00e4mple.com/",
        "http://api.example.com:99999/",
        "http://api.example.com:/",
        "http://[::1/",
        "http://-api.example.com/",
        "http://api..example.com/",
    ],
)
def test_malformed_hosts_are_refused_at_save(url: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_config({"actions": [{"name": "Probe", "url": url}]}, environ={})
    assert info.value.field == "url"
    assert "host" in info.value.reason or "port" in info.value.reason


def test_the_backslash_host_is_refused_naming_it() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_config(
            {"actions": [{"name": "Probe", "url": "http://127.0.0.1\\.api.example.com/"}]},
            environ={},
        )
    assert str(info.value) == (
        "action 'Probe': url: the host '127.0.0.1\\\\.api.example.com' is not a valid host name "
        "or IP address (letters, digits, '-', '_' and '.' only; write IDNs in their xn-- form)"
    )


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("https://api.example.com/a b", "a space"),
        ("https://api.example.com/a\\b", "U+005C"),
        ("https://api.example.com/\u00e4", "U+00E4"),
        ("https://api.example.com/a\x01", "U+0001"),
        ("https://api.example.com/?q=%zz", "'%'"),
    ],
)
def test_literal_url_text_that_cannot_be_sent_is_refused(url: str, what: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_config({"actions": [{"name": "Probe", "url": url}]}, environ={})
    assert info.value.field == "url" and what in info.value.reason


def test_check_url_turns_a_parser_refusal_into_a_block() -> None:
    with pytest.raises(EgressBlocked) as info:
        POLICY.check_url("http://127.0.0.1\\.api.example.com/")
    assert info.value.host == "127.0.0.1\\.api.example.com"
    assert info.value.reason.startswith("malformed URL (")
    with pytest.raises(EgressBlocked, match="port 6379"):
        POLICY.check_url("https://93.184.216.34:6379/")
    with pytest.raises(EgressBlocked, match="loopback"):
        POLICY.check_url("http://[::1]:80/")
    POLICY.check_url("https://93.184.216.34/x")


async def test_a_stored_backslash_url_is_a_blocked_record_not_an_error(store: LogStore) -> None:
    outbound = Outbound(EgressPolicy())
    try:
        result = await Executor(outbound, logstore=store).execute_action(
            http_action("http://127.0.0.1\\.api.example.com/"), conversation(), "{}"
        )
    finally:
        await outbound.close()
    assert result.outcome == "blocked"


async def test_admin_api_refuses_the_backslash_url_with_a_422(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"name": "Probe", "url": "http://127.0.0.1\\.api.example.com/", "when_not_to_use": "x"}
    r = await gw.client.post("/api/actions", json=body, headers=headers)
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "url"
    assert "is not a valid host name" in r.json()["error"]["message"]
