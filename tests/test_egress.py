"""The egress guard: deny table, embedded IPv4, host spellings, allow-list, pinned resolution."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from aiohttp import web

from gateway.errors import ConfigError, EgressBlocked
from gateway.net.egress import (
    DENY_TABLE,
    EgressPolicy,
    IPLiteral,
    Lookup,
    parse_ip_literal,
)
from gateway.net.outbound import ConnectFailed, Outbound, OutboundCall, OutboundResponse

POLICY = EgressPolicy()


def answering(*answers: Sequence[str]) -> tuple[Lookup, list[str]]:
    """A fake lookup giving one answer per call (the last one repeats), and its call log."""
    calls: list[str] = []

    async def lookup(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    return lookup, calls


# One representative address per deny-table row, in table order.
ROW_SAMPLES = [
    ("0.1.2.3", "'this' network"),
    ("10.20.30.40", "10.0.0.0/8"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("127.0.0.1", "loopback"),
    ("169.254.169.254", "cloud metadata"),
    ("172.31.255.254", "172.16.0.0/12"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("192.168.1.1", "192.168.0.0/16"),
    ("198.19.0.1", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "limited broadcast"),
    ("240.0.0.1", "reserved"),
    ("168.63.129.16", "Azure WireServer"),
    ("192.31.196.1", "AS112"),
    ("192.52.193.1", "AMT"),
    ("192.175.48.1", "AS112"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fd00:ec2::254", "AWS metadata"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("100::1", "discard-only"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("100:0:0:1::1", "dummy prefix"),
    ("2001:1::1", "PCP"),
    ("2001:2::1", "benchmarking"),
    ("2001:3::1", "AMT"),
    ("2001:4:112::1", "AS112"),
    ("2001:10::1", "ORCHID"),
    ("2001:20::1", "ORCHIDv2"),
    ("2001:30::1", "drone"),
    ("2620:4f:8000::1", "AS112"),
    ("5f00::1", "SRv6"),
]


def test_every_row_has_a_sample() -> None:
    assert len(ROW_SAMPLES) == len(DENY_TABLE)
    for (sample, _), (network, _) in zip(ROW_SAMPLES, DENY_TABLE, strict=True):
        assert ip_address(sample) in network


@pytest.mark.parametrize(("address", "reason_part"), ROW_SAMPLES)
def test_deny_table_rows(address: str, reason_part: str) -> None:
    reason = POLICY.check_address(address)
    assert reason is not None
    assert reason_part in reason


@pytest.mark.parametrize(
    "address",
    [
        "1.1.1.1",
        "8.8.8.8",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.1",
        "126.255.255.255",
        "128.0.0.1",
        "169.253.255.255",
        "169.255.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "192.0.1.1",
        "192.167.255.255",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.1",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2001:db9::1",
        "fbff:ffff::1",
        "fe00::1",
        "100:0:0:2::1",
        "64:ff9b:2::1",
    ],
)
def test_addresses_just_outside_rows_are_allowed(address: str) -> None:
    assert POLICY.check_address(address) is None


def teredo(server: str, client: str) -> str:
    """Build a Teredo address (2001::/32, server in bits 32-63, client bit-inverted)."""
    inverted = int(IPv4Address(client)) ^ 0xFFFFFFFF
    value = (0x2001_0000 << 96) | (int(IPv4Address(server)) << 64) | inverted
    return str(IPv6Address(value))


@pytest.mark.parametrize(
    ("address", "form"),
    [
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("::ffff:169.254.169.254", "IPv4-mapped"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("::10.0.0.1", "IPv4-compatible"),
        ("64:ff9b::a9fe:a9fe", "NAT64"),
        ("2002:7f00:1::", "6to4"),
        ("2002:c0a8:101::1", "6to4"),
        (teredo("65.54.227.120", "127.0.0.1"), "Teredo client"),
        (teredo("65.54.227.120", "10.0.0.1"), "Teredo client"),
        (teredo("10.1.1.1", "8.8.8.8"), "Teredo server"),
    ],
)
def test_embedded_private_ipv4_is_denied(address: str, form: str) -> None:
    reason = POLICY.check_address(address)
    assert reason is not None
    assert form in reason


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        teredo("65.54.227.120", "8.8.4.4"),
    ],
)
def test_embedded_public_ipv4_is_allowed(address: str) -> None:
    assert POLICY.check_address(address) is None


def test_teredo_helper_matches_the_stdlib() -> None:
    address = IPv6Address(teredo("65.54.227.120", "127.0.0.1"))
    assert address.teredo == (IPv4Address("65.54.227.120"), IPv4Address("127.0.0.1"))


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "127.0.1", "0x7F.0.0.1"]
)
def test_non_canonical_numerals_are_refused(host: str) -> None:
    literal = parse_ip_literal(host)
    assert literal == IPLiteral(IPv4Address("127.0.0.1"), canonical=False)
    with pytest.raises(EgressBlocked) as info:
        POLICY.check_host_name(host)
    assert info.value.reason == "non-canonical numeric host"
    assert info.value.host == host


@pytest.mark.parametrize("host", ["08.8.8.8", "999.1.1.1", "1.2.3.4.5", "127.0.0.1.", "a.b.0x10"])
def test_other_numeric_looking_hosts_are_refused(host: str) -> None:
    with pytest.raises(EgressBlocked, match="non-canonical numeric host"):
        POLICY.check_host_name(host)


def test_non_canonical_numeral_is_refused_even_when_its_address_is_public() -> None:
    assert parse_ip_literal("134744072") == IPLiteral(IPv4Address("8.8.8.8"), canonical=False)
    with pytest.raises(EgressBlocked, match="non-canonical"):
        POLICY.check_host_name("134744072")


def test_canonical_literals() -> None:
    assert parse_ip_literal("8.8.8.8") == IPLiteral(IPv4Address("8.8.8.8"), canonical=True)
    POLICY.check_host_name("8.8.8.8")
    with pytest.raises(EgressBlocked, match="loopback"):
        POLICY.check_host_name("127.0.0.1")
    assert parse_ip_literal("api.example.com") is None


@pytest.mark.parametrize("host", ["[fe80::1%25eth0]", "[fe80::1%eth0]", "fe80::1%eth0"])
def test_ipv6_literal_with_zone(host: str) -> None:
    literal = parse_ip_literal(host)
    assert literal is not None
    assert literal.canonical
    assert literal.address == IPv6Address("fe80::1%eth0")
    with pytest.raises(EgressBlocked, match="link-local"):
        POLICY.check_host_name(host)


@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "::ffff:7f00:1"])
def test_ipv6_literals_are_checked(host: str) -> None:
    with pytest.raises(EgressBlocked, match="loopback"):
        POLICY.check_host_name(host)


def test_public_ipv6_literal_passes() -> None:
    POLICY.check_host_name("[2606:4700:4700::1111]")


@pytest.mark.parametrize("host", ["[::1", "[not-ip]", "a:b", ""])
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(EgressBlocked, match="malformed host"):
        POLICY.check_host_name(host)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST.",
        "api.localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "crm.corp.internal",
    ],
)
def test_denied_names(host: str) -> None:
    with pytest.raises(EgressBlocked, match="internal host name"):
        POLICY.check_host_name(host)


@pytest.mark.parametrize("host", ["api.example.com", "internal.example.com", "mylocalhost.com"])
def test_ordinary_names_pass(host: str) -> None:
    POLICY.check_host_name(host)


async def test_allow_by_name_skips_checks_for_that_name_only() -> None:
    policy = EgressPolicy(allow=["CRM.Corp.Internal.", "localhost"])
    lookup, _ = answering(["10.0.0.5"])
    policy.check_host_name("crm.corp.internal")
    assert await policy.resolve("crm.corp.internal", 443, lookup=lookup) == [
        IPv4Address("10.0.0.5")
    ]
    assert await policy.resolve("localhost.", 80, lookup=answering(["127.0.0.1"])[0])
    with pytest.raises(EgressBlocked, match=re.escape("10.0.0.0/8")):
        await policy.resolve("other.example.com", 443, lookup=lookup)
    with pytest.raises(EgressBlocked):
        policy.check_host_name("billing.corp.internal")


async def test_allow_by_ip_and_cidr() -> None:
    policy = EgressPolicy(allow=["127.0.0.1", "10.8.0.0/16", "[fd00:ec2::254]"])
    assert policy.check_address("127.0.0.1") is None
    assert policy.check_address("::ffff:127.0.0.1") is None
    assert policy.check_address("10.8.200.1") is None
    assert policy.check_address("fd00:ec2::254") is None
    assert policy.check_address("127.0.0.2") is not None
    assert policy.check_address("10.9.0.1") is not None
    policy.check_host_name("127.0.0.1")
    with pytest.raises(EgressBlocked):
        policy.check_host_name("127.1")  # non-canonical stays refused
    lookup, _ = answering(["10.8.0.9"])
    assert await policy.resolve("vpn.example.com", 443, lookup=lookup) == [IPv4Address("10.8.0.9")]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("api.example.com:99999", "port must be a number"),
        ("api.example.com:", "port must be a number"),
        ("[fd00::1]8092", "[address]:port"),
        ("*.example.com", "malformed host name"),
        ("0x7f000001", "non-canonical"),
        ("", "non-empty"),
        ("10.0.0.0/33", "10.0.0.0/33"),
    ],
)
def test_invalid_allow_entries(entry: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        EgressPolicy(allow=[entry])
    message = str(info.value)
    assert repr(entry) in message
    assert why in message


def test_allow_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match="must be a list"):
        EgressPolicy(allow="10.0.0.0/8")


async def test_disabled_policy_allows_everything() -> None:
    policy = EgressPolicy(enabled=False)
    assert policy.check_address("169.254.169.254") is None
    policy.check_host_name("metadata.google.internal")
    policy.check_host_name("2130706433")
    lookup, _ = answering(["127.0.0.1"])
    assert await policy.resolve("rebind.test", 80, lookup=lookup) == [IPv4Address("127.0.0.1")]


async def test_rebinding_second_resolution_is_blocked() -> None:
    lookup, calls = answering(["93.184.216.34"], ["127.0.0.1"])
    first = await POLICY.resolve("rebind.test", 80, lookup=lookup)
    assert first == [IPv4Address("93.184.216.34")]
    with pytest.raises(EgressBlocked, match=re.escape("resolves to 127.0.0.1: loopback")):
        await POLICY.resolve("rebind.test", 80, lookup=lookup)
    assert calls == ["rebind.test", "rebind.test"]


@pytest.mark.parametrize(
    "answer",
    [["93.184.216.34", "10.0.0.1"], ["10.0.0.1", "93.184.216.34"], ["2606:4700::1", "::1"]],
)
async def test_mixed_answer_blocks_the_whole_host(answer: list[str]) -> None:
    with pytest.raises(EgressBlocked) as info:
        await POLICY.resolve("mixed.test", 443, lookup=answering(answer)[0])
    assert info.value.host == "mixed.test"


async def test_empty_answer_does_not_resolve() -> None:
    with pytest.raises(EgressBlocked, match="does not resolve"):
        await POLICY.resolve("nothing.test", 443, lookup=answering([])[0])


async def test_denied_names_and_numerals_are_refused_before_lookup() -> None:
    lookup, calls = answering(["93.184.216.34"])
    for host in ("metadata.google.internal", "0x7f000001", "localhost"):
        with pytest.raises(EgressBlocked):
            await POLICY.resolve(host, 80, lookup=lookup)
    assert calls == []


async def test_literal_resolves_to_itself_without_lookup() -> None:
    lookup, calls = answering(["127.0.0.1"])
    assert await POLICY.resolve("8.8.8.8", 443, lookup=lookup) == [IPv4Address("8.8.8.8")]
    assert calls == []


async def test_system_lookup_resolves_localhost_names() -> None:
    # "localhost" is refused by name; the default lookup is only reached for other names.
    with pytest.raises(EgressBlocked, match="internal host name"):
        await EgressPolicy().resolve("localhost", 80)
    addresses = await EgressPolicy(allow=["localhost"]).resolve("localhost", 80)
    assert addresses
    assert all(address.is_loopback for address in addresses)


# --- end to end: the outbound client against a real loopback server ----------------------------


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[str]]]:
    received: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(request.path)
        return web.Response(text="inside")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, received
    finally:
        await runner.cleanup()


async def get(outbound: Outbound, url: str) -> OutboundResponse:
    deadline = asyncio.get_running_loop().time() + 5
    try:
        return await outbound.send(OutboundCall("GET", url, {}, None, deadline))
    finally:
        await outbound.close()


async def test_end_to_end_rebinding_to_loopback_is_blocked(
    server: tuple[int, list[str]],
) -> None:
    port, received = server
    lookup, calls = answering(["127.0.0.1"])
    with pytest.raises(EgressBlocked, match="loopback"):
        await get(Outbound(EgressPolicy(), lookup=lookup), f"http://rebind.test:{port}/")
    with pytest.raises(EgressBlocked, match="non-canonical"):
        await get(Outbound(EgressPolicy(), lookup=lookup), f"http://0x7f000001:{port}/")
    assert calls == ["rebind.test"]
    assert received == []


async def test_end_to_end_allowed_address_goes_through(server: tuple[int, list[str]]) -> None:
    port, received = server
    lookup, _ = answering(["127.0.0.1"])
    outbound = Outbound(EgressPolicy(allow=["127.0.0.1"]), lookup=lookup)
    response = await get(outbound, f"http://rebind.test:{port}/")
    assert (response.status, response.body) == (200, b"inside")
    assert received == ["/"]


async def test_end_to_end_connects_to_the_checked_addresses_in_order(
    server: tuple[int, list[str]],
) -> None:
    # Nothing listens on 127.0.0.2: the client moves on to the next checked address, and never
    # to an address the lookup did not give (the host name is not looked up again).
    port, received = server
    lookup, calls = answering(["127.0.0.2", "127.0.0.1"])
    outbound = Outbound(EgressPolicy(allow=["127.0.0.0/8"]), lookup=lookup)
    response = await get(outbound, f"http://rebind.test:{port}/")
    assert (response.status, response.body) == (200, b"inside")
    assert received == ["/"]
    assert calls == ["rebind.test"]
    lookup, _ = answering(["127.0.0.2"])
    with pytest.raises(ConnectFailed, match=r"cannot connect to rebind\.test"):
        await get(
            Outbound(EgressPolicy(allow=["127.0.0.0/8"]), lookup=lookup),
            f"http://rebind.test:{port}/",
        )


def test_check_url_remembers_each_origins_verdict_within_a_bound() -> None:
    policy = EgressPolicy(allow=["127.0.0.1"])
    for _ in range(3):  # the remembered verdict is the first one, refusal and reason included
        policy.check_url("http://127.0.0.1:8092/orders/1?email=a%40b.c")
        with pytest.raises(EgressBlocked, match="loopback"):
            policy.check_url("http://127.0.0.2:8092/orders/1")
        with pytest.raises(EgressBlocked, match="non-canonical"):
            policy.check_url("http://0x7f000001/")
        with pytest.raises(EgressBlocked, match="malformed URL"):
            policy.check_url("ftp://127.0.0.1/")
    # The path and query are not part of the verdict; the port is.
    policy.check_url("http://127.0.0.1:8092/other")
    with pytest.raises(EgressBlocked, match="port 8092 is not allowed"):
        EgressPolicy().check_url("http://93.184.216.34:8092/")
    many = EgressPolicy()
    for n in range(6000):
        many.check_url(f"https://api{n}.example.com/")
    assert len(many._verdicts) <= 4096  # the bound is the point
