"""Egress guard: keep outgoing action requests away from private and internal addresses.

Threat model: operators configure action URLs, but a host name is only a promise. DNS can answer
with a loopback, private or cloud-metadata address (on purpose, or by rebinding between check and
connect), and IP literals have spellings that parsers read differently (``2130706433``,
``0x7f.1``, ``::ffff:127.0.0.1``). Reaching such an address from inside the gateway's network
(server-side request forgery) could expose internal services and cloud credentials. By default:

- every address a host resolves to is checked against :data:`DENY_TABLE`, with IPv4 addresses
  embedded in IPv6 forms (mapped, compatible, NAT64, 6to4, Teredo) unpacked and checked too;
- a host with *any* denied address is blocked as a whole (a mixed answer is an attack signal);
- :class:`GuardedResolver` hands aiohttp only the addresses it checked, so the socket connects to
  exactly those (no second lookup to rebind);
- numeric host spellings other than a canonical dotted quad are refused outright;
- well-known internal names (:data:`DENIED_NAMES`, :data:`DENIED_SUFFIXES`) are refused before
  any lookup.

Operators exempt hosts with ``egress.allow`` (see :class:`EgressPolicy`).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.errors import ConfigError, EgressBlocked

__all__ = [
    "DENIED_NAMES",
    "DENIED_SUFFIXES",
    "DENY_TABLE",
    "EgressPolicy",
    "GuardedResolver",
    "IPAddress",
    "IPLiteral",
    "Lookup",
    "parse_ip_literal",
    "system_lookup",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

Lookup = Callable[[str, int], Awaitable[Sequence[str]]]
"""An async name lookup: ``(host, port)`` to address strings (IPv6 may carry ``%zone``)."""

NON_CANONICAL = "non-canonical numeric host"

# Checked top to bottom; the first matching row gives the reason, so narrow rows come first.
DENY_TABLE: tuple[tuple[IPNetwork, str], ...] = (
    (ip_network("0.0.0.0/8"), "'this' network (0.0.0.0/8)"),
    (ip_network("10.0.0.0/8"), "private network (10.0.0.0/8)"),
    (ip_network("100.64.0.0/10"), "carrier-grade NAT (100.64.0.0/10)"),
    (ip_network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (ip_network("169.254.0.0/16"), "link-local (169.254.0.0/16; cloud metadata 169.254.169.254)"),
    (ip_network("172.16.0.0/12"), "private network (172.16.0.0/12)"),
    (ip_network("192.0.0.0/24"), "IETF protocol assignments (192.0.0.0/24)"),
    (ip_network("192.0.2.0/24"), "documentation (192.0.2.0/24)"),
    (ip_network("192.88.99.0/24"), "6to4 relay anycast (192.88.99.0/24)"),
    (ip_network("192.168.0.0/16"), "private network (192.168.0.0/16)"),
    (ip_network("198.18.0.0/15"), "benchmarking (198.18.0.0/15)"),
    (ip_network("198.51.100.0/24"), "documentation (198.51.100.0/24)"),
    (ip_network("203.0.113.0/24"), "documentation (203.0.113.0/24)"),
    (ip_network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (ip_network("255.255.255.255/32"), "limited broadcast (255.255.255.255)"),
    (ip_network("240.0.0.0/4"), "reserved (240.0.0.0/4)"),
    (ip_network("::/128"), "unspecified address (::)"),
    (ip_network("::1/128"), "loopback (::1)"),
    (ip_network("fc00::/7"), "unique local (fc00::/7; AWS metadata fd00:ec2::254)"),
    (ip_network("fe80::/10"), "link-local (fe80::/10)"),
    (ip_network("fec0::/10"), "site-local (fec0::/10)"),
    (ip_network("ff00::/8"), "multicast (ff00::/8)"),
    (ip_network("100::/64"), "discard-only (100::/64)"),
    (ip_network("2001:db8::/32"), "documentation (2001:db8::/32)"),
    (ip_network("3fff::/20"), "documentation (3fff::/20)"),
    (ip_network("64:ff9b:1::/48"), "local-use NAT64 (64:ff9b:1::/48)"),
)

DENIED_NAMES: frozenset[str] = frozenset(
    {"localhost", "metadata", "metadata.google.internal", "metadata.goog"}
    | {"instance-data", "instance-data.ec2.internal"}
)
"""Names refused before any lookup (cloud metadata endpoints and the local host)."""

DENIED_SUFFIXES: tuple[str, ...] = (".localhost", ".internal")
"""Name suffixes refused before any lookup: ``.localhost`` is the local host (RFC 6761), and
``.internal`` is reserved for private networks (ICANN, 2024) and used for cloud VM and metadata
names, so it never names a public API. Operators exempt a specific name with ``egress.allow``."""

_NUMERIC_PART = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")

_MAPPED = ip_network("::ffff:0:0/96")
_COMPATIBLE = ip_network("::/96")
_NAT64 = ip_network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class IPLiteral:
    """A host that is an IP address.

    Attributes:
        address: The address the host denotes (as ``inet_aton`` reads IPv4 spellings).
        canonical: True for a canonical dotted quad or any IPv6 literal; False for other numeric
            IPv4 spellings (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``).
    """

    address: IPAddress
    canonical: bool


def parse_ip_literal(host: str) -> IPLiteral | None:
    """Read a URL host as an IP literal; None when it is not one (a name, or malformed).

    Understands IPv6 with or without brackets, with a ``%zone`` (or URL-encoded ``%25zone``), and
    every IPv4 spelling ``inet_aton`` accepts: 1 to 4 dot-separated parts, each decimal, ``0x``
    hex or ``0``-prefixed octal, the last part filling the remaining bytes.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    elif text.startswith("[") or text.endswith("]"):
        return None
    if ":" in text:
        try:
            return IPLiteral(IPv6Address(text.replace("%25", "%", 1)), canonical=True)
        except ValueError:
            return None
    value = _inet_aton(text)
    if value is None:
        return None
    address = IPv4Address(value)
    return IPLiteral(address, canonical=str(address) == text)


def _inet_aton(text: str) -> int | None:
    parts = text.split(".")
    if len(parts) > 4 or not all(_NUMERIC_PART.fullmatch(part) for part in parts):
        return None
    numbers: list[int] = []
    for part in parts:
        if part[:2].lower() == "0x":
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if not set(part) <= set("01234567"):
                return None
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return value


def _normalize_name(host: str) -> str:
    name = host.strip().lower()
    return name[:-1] if name.endswith(".") else name


def _ends_in_number(name: str) -> bool:
    # The WHATWG URL rule: a host whose last label is numeric is meant as an IPv4 address.
    return _NUMERIC_PART.fullmatch(name.rsplit(".", 1)[-1]) is not None


def _denied_name_reason(name: str) -> str | None:
    if name in DENIED_NAMES:
        return f"internal host name {name!r}"
    for suffix in DENIED_SUFFIXES:
        if name.endswith(suffix):
            return f"internal host name (ends in {suffix!r})"
    return None


def _embedded_ipv4(ip: IPv6Address) -> list[tuple[str, IPv4Address]]:
    """Return the IPv4 addresses an IPv6 address routes to, labelled by form."""
    low32 = IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED:
        return [("IPv4-mapped", low32)]
    if ip in _COMPATIBLE:
        return [("IPv4-compatible", low32)]
    if ip in _NAT64:
        return [("NAT64", low32)]
    if ip.sixtofour is not None:
        return [("6to4", ip.sixtofour)]
    if ip.teredo is not None:  # (server, client); the stdlib already un-inverts the client
        server, client = ip.teredo
        return [("Teredo client", client), ("Teredo server", server)]
    return []


def _table_reason(ip: IPAddress) -> str | None:
    for network, reason in DENY_TABLE:
        if network.version == ip.version and ip in network:
            return reason
    return None


class EgressPolicy:
    """Which destinations outgoing action requests may reach.

    Args:
        allow: Operator exemptions (``egress.allow``): host names, IP addresses or CIDRs, each
            for every port. A host name matches exactly (case-insensitive, trailing dot ignored)
            and skips every check for that host; IP and CIDR entries allow the addresses inside.
        enabled: False turns the guard off entirely (explicit operator opt-out only).

    Raises:
        ConfigError: An ``allow`` entry is not a host name, IP address or CIDR.
    """

    __slots__ = ("_allowed_names", "_allowed_networks", "enabled")

    def __init__(self, allow: Sequence[str] = (), *, enabled: bool = True) -> None:
        if isinstance(allow, str):
            raise ConfigError("egress.allow must be a list of host names, IP addresses or CIDRs")
        self.enabled = enabled
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allow:
            parsed = _parse_allow_entry(entry)
            if isinstance(parsed, str):
                names.add(parsed)
            else:
                networks.append(parsed)
        self._allowed_names = frozenset(names)
        self._allowed_networks = tuple(networks)

    def _allowed(self, ip: IPAddress) -> bool:
        return any(net.version == ip.version and ip in net for net in self._allowed_networks)

    def check_address(self, ip: IPAddress | str) -> str | None:
        """Return why ``ip`` (an address, or its text) may not be reached; None if it may."""
        address = ip_address(ip) if isinstance(ip, str) else ip
        if not self.enabled or self._allowed(address):
            return None
        reason = _table_reason(address)
        if reason is not None or not isinstance(address, IPv6Address):
            return reason
        for form, embedded in _embedded_ipv4(address):
            if self._allowed(embedded):
                continue
            inner = _table_reason(embedded)
            if inner is not None:
                return f"{inner}, embedded as {form} {embedded} in {address}"
        return None

    def check_host_name(self, host: str) -> None:
        """Refuse a URL host before any lookup: denied names, odd numerals, denied IP literals.

        Call this for every request: aiohttp does not consult its resolver for IP literals.

        Raises:
            EgressBlocked: The host may not be reached.
        """
        if not self.enabled:
            return
        name = _normalize_name(host)
        if name in self._allowed_names:
            return
        literal = parse_ip_literal(host)
        if literal is not None:
            if not literal.canonical:
                raise EgressBlocked(host, NON_CANONICAL)
            reason = self.check_address(literal.address)
            if reason is not None:
                raise EgressBlocked(host, reason)
            return
        if not name or any(c in name for c in ":[]%"):
            raise EgressBlocked(host, "malformed host")
        if _ends_in_number(name):
            raise EgressBlocked(host, NON_CANONICAL)
        reason = _denied_name_reason(name)
        if reason is not None:
            raise EgressBlocked(host, reason)

    async def resolve(
        self, host: str, port: int = 0, *, lookup: Lookup | None = None
    ) -> list[IPAddress]:
        """Resolve ``host`` and return its addresses (in lookup order, deduplicated), all checked.

        ``lookup`` defaults to :func:`system_lookup` (the event loop's ``getaddrinfo``).

        Raises:
            EgressBlocked: The host is refused, does not resolve, or any address is denied.
            OSError: The lookup itself failed (e.g. ``socket.gaierror`` for an unknown name).
        """
        self.check_host_name(host)
        literal = parse_ip_literal(host)
        if literal is not None:
            return [literal.address]
        answers = await (lookup or system_lookup)(host, port)
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                address = ip_address(answer)
            except ValueError:
                raise EgressBlocked(host, f"lookup returned a non-address {answer!r}") from None
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise EgressBlocked(host, "does not resolve")
        if self.enabled and _normalize_name(host) not in self._allowed_names:
            for address in addresses:
                reason = self.check_address(address)
                if reason is not None:
                    raise EgressBlocked(host, f"resolves to {address}: {reason}")
        return addresses


def _parse_allow_entry(entry: str) -> str | IPNetwork:
    def invalid(why: str) -> ConfigError:
        return ConfigError(
            f"egress.allow entry {entry!r} is not a host name, IP address or CIDR: {why}"
        )

    text = entry.strip() if isinstance(entry, str) else ""
    if not text:
        raise invalid("expected a non-empty string")
    if "/" in text:
        try:
            return ip_network(text.strip("[]"))
        except ValueError as exc:
            raise invalid(str(exc)) from None
    literal = parse_ip_literal(text)
    if literal is not None:
        if not literal.canonical:
            raise invalid(f"{NON_CANONICAL}; write it as {literal.address}")
        return ip_network(str(literal.address).split("%", 1)[0])
    name = _normalize_name(text)
    if ":" in name:
        raise invalid("an entry has no port (it applies to every port)")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise invalid("malformed host name (write IDNs in their xn-- form; no wildcards)")
    if _ends_in_number(name):
        raise invalid(NON_CANONICAL)
    return name


async def system_lookup(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the event loop's ``getaddrinfo`` (the default :data:`Lookup`).

    Raises:
        OSError: The lookup failed (``socket.gaierror``).
    """
    # No AI_ADDRCONFIG: it hides "localhost" on hosts without a non-loopback address, and aiohttp
    # moves on quickly from an address family the host cannot reach.
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    answers: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family == socket.AF_INET:
            answers.append(str(sockaddr[0]))
        elif family == socket.AF_INET6 and len(sockaddr) >= 4:
            address, scope = str(sockaddr[0]), sockaddr[3]
            answers.append(f"{address}%{scope}" if scope and "%" not in address else address)
    return answers


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that only ever returns addresses the policy checked.

    Pass it to ``aiohttp.TCPConnector(resolver=...)``. The connector connects to the returned
    addresses as numeric hosts, so nothing is looked up twice and a rebinding DNS answer cannot
    slip in between check and connect. aiohttp skips resolvers for IP-literal hosts; call
    :meth:`EgressPolicy.check_host_name` before each request for those.

    Args:
        policy: The egress policy.
        lookup: The underlying name lookup; default :func:`system_lookup`.
    """

    def __init__(self, policy: EgressPolicy, lookup: Lookup | None = None) -> None:
        self.policy = policy
        self._lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve and check ``host``; see :meth:`EgressPolicy.resolve`.

        Raises:
            EgressBlocked: The policy refused the host.
            OSError: The lookup failed, or the host has no address of ``family``.
        """
        addresses = await self.policy.resolve(host, port, lookup=self._lookup)
        results = [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET if address.version == 4 else socket.AF_INET6,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]
        if family != socket.AF_UNSPEC:
            results = [result for result in results if result["family"] == family]
        if not results:
            raise OSError(f"{host!r} has no {family.name} address")
        return results

    async def close(self) -> None:
        """Nothing to release."""
