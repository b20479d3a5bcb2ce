"""Egress guard: keep outgoing action requests away from private and internal addresses.

Threat model: operators configure action URLs, but a host name is only a promise. DNS can answer
with a loopback, private or cloud-metadata address (on purpose, or by rebinding between check and
connect), and IP literals have spellings that parsers read differently (``2130706433``,
``0x7f.1``, ``::ffff:127.0.0.1``). Reaching such an address from inside the gateway's network
(server-side request forgery) could expose internal services and cloud credentials. By default:

- every address a host resolves to is checked against :data:`DENY_TABLE`, with IPv4 addresses
  embedded in IPv6 forms (mapped, compatible, NAT64, 6to4, Teredo) unpacked and checked too;
- a host with *any* denied address is blocked as a whole (a mixed answer is an attack signal);
- :meth:`EgressPolicy.resolve` gives the outbound client (:mod:`gateway.net.outbound`) only the
  addresses it checked, and the socket connects to exactly those (no second lookup to rebind);
- numeric host spellings other than a canonical dotted quad are refused outright;
- well-known internal names (:data:`DENIED_NAMES`, :data:`DENIED_SUFFIXES`) are refused before
  any lookup;
- an address the table lets through must still be globally reachable (``ipaddress``'s
  ``is_global``): a second opinion that catches what a hand-kept table might miss;
- only ports 80 and 443 are reached (``egress.ports`` changes the list), so an action cannot be
  pointed at a database or admin port of a public host.

Operators exempt hosts with ``egress.allow`` (see :class:`EgressPolicy`); an entry may carry a
port (``10.0.0.5:8092``) to open only that port.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from yarl import URL

from gateway.errors import ConfigError, EgressBlocked

__all__ = [
    "DEFAULT_PORTS",
    "DENIED_NAMES",
    "DENIED_SUFFIXES",
    "DENY_TABLE",
    "EgressPolicy",
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

DEFAULT_PORTS: tuple[int, ...] = (80, 443)
"""The ports hosts not named in ``egress.allow`` are reached on (``egress.ports`` changes it)."""

# Checked top to bottom; the first matching row gives the reason, so narrow rows come first.
# Audited against the IANA IPv4 and IPv6 Special-Purpose Address Registries (every row of both,
# globally reachable or not: no action calls an anycast protocol service) and the metadata
# addresses of the major clouds; ``is_global`` is checked after the table as a second opinion.
DENY_TABLE: tuple[tuple[IPNetwork, str], ...] = (
    (ip_network("0.0.0.0/8"), "'this' network (0.0.0.0/8)"),
    (ip_network("10.0.0.0/8"), "private network (10.0.0.0/8)"),
    (ip_network("100.64.0.0/10"), "carrier-grade NAT (100.64.0.0/10; Alibaba metadata)"),
    (ip_network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (ip_network("169.254.0.0/16"), "link-local (169.254.0.0/16; cloud metadata 169.254.169.254)"),
    (ip_network("172.16.0.0/12"), "private network (172.16.0.0/12)"),
    (ip_network("192.0.0.0/24"), "IETF protocol assignments (192.0.0.0/24; Oracle metadata)"),
    (ip_network("192.0.2.0/24"), "documentation (192.0.2.0/24)"),
    (ip_network("192.88.99.0/24"), "6to4 relay anycast (192.88.99.0/24)"),
    (ip_network("192.168.0.0/16"), "private network (192.168.0.0/16)"),
    (ip_network("198.18.0.0/15"), "benchmarking (198.18.0.0/15)"),
    (ip_network("198.51.100.0/24"), "documentation (198.51.100.0/24)"),
    (ip_network("203.0.113.0/24"), "documentation (203.0.113.0/24)"),
    (ip_network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (ip_network("255.255.255.255/32"), "limited broadcast (255.255.255.255)"),
    (ip_network("240.0.0.0/4"), "reserved (240.0.0.0/4)"),
    (ip_network("168.63.129.16/32"), "cloud metadata (Azure WireServer 168.63.129.16)"),
    (ip_network("192.31.196.0/24"), "AS112 DNS sink (192.31.196.0/24)"),
    (ip_network("192.52.193.0/24"), "AMT relay anycast (192.52.193.0/24)"),
    (ip_network("192.175.48.0/24"), "AS112 direct delegation (192.175.48.0/24)"),
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
    (ip_network("100:0:0:1::/64"), "dummy prefix (100:0:0:1::/64)"),
    (ip_network("2001:1::/126"), "protocol anycast (PCP, TURN, DNS-SD SRP: 2001:1::1-3)"),
    (ip_network("2001:2::/48"), "benchmarking (2001:2::/48)"),
    (ip_network("2001:3::/32"), "AMT (2001:3::/32)"),
    (ip_network("2001:4:112::/48"), "AS112 DNS sink (2001:4:112::/48)"),
    (ip_network("2001:10::/28"), "ORCHID, deprecated (2001:10::/28)"),
    (ip_network("2001:20::/28"), "ORCHIDv2 (2001:20::/28)"),
    (ip_network("2001:30::/28"), "drone remote ID (2001:30::/28)"),
    (ip_network("2620:4f:8000::/48"), "AS112 direct delegation (2620:4f:8000::/48)"),
    (ip_network("5f00::/16"), "SRv6 segment identifiers (5f00::/16)"),
)

DENIED_NAMES: frozenset[str] = frozenset(
    {"localhost", "metadata", "metadata.google.internal", "metadata.goog"}
    | {"instance-data", "instance-data.ec2.internal", "metadata.tencentyun.com"}
    | {"api.metadata.cloud.ibm.com", "metadata.platformequinix.com", "metadata.packet.net"}
    | {"rancher-metadata", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
)
"""Names refused before any lookup (cloud metadata endpoints, the cluster API, the local host)."""

DENIED_SUFFIXES: tuple[str, ...] = (".localhost", ".internal", ".local", ".home.arpa")
"""Name suffixes refused before any lookup: ``.localhost`` is the local host (RFC 6761),
``.internal`` is reserved for private networks (ICANN, 2024) and used for cloud VM and metadata
names, ``.local`` is multicast DNS (RFC 6762, also Kubernetes' ``cluster.local``) and
``.home.arpa`` names home networks (RFC 8375); none names a public API. Operators exempt a
specific name with ``egress.allow``."""

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


def _global_reason(ip: IPAddress) -> str | None:
    if ip.is_global:
        return None
    return f"not a globally reachable address ({ip}, special-purpose)"


def _host_text(host: str, port: int) -> str:
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


class EgressPolicy:
    """Which destinations outgoing action requests may reach.

    Args:
        allow: Operator exemptions (``egress.allow``): host names, IP addresses or CIDRs, each
            optionally with a port (``10.0.0.5:8092``, ``[fd00::5]:8092``). Without a port an
            entry opens every port of what it names; with one, only that port. A host name
            matches exactly (case-insensitive, trailing dot ignored) and skips every check for
            that host; IP and CIDR entries allow the addresses inside.
        ports: The ports every other destination may be reached on (``egress.ports``).
        enabled: False turns the guard off entirely (explicit operator opt-out only).

    Raises:
        ConfigError: An ``allow`` entry is not a host name, IP address or CIDR (with an optional
            port), or a port is not a number from 1 to 65535.
    """

    __slots__ = ("_named", "_networks", "_verdicts", "enabled", "ports")

    def __init__(
        self,
        allow: Sequence[str] = (),
        *,
        ports: Iterable[int] = DEFAULT_PORTS,
        enabled: bool = True,
    ) -> None:
        if isinstance(allow, str):
            raise ConfigError("egress.allow must be a list of host names, IP addresses or CIDRs")
        self.enabled = enabled
        self.ports = _parse_ports(ports)
        named: dict[str, set[int] | None] = {}
        networks: list[tuple[IPNetwork, int | None]] = []
        for entry in allow:
            target, port = _parse_allow_entry(entry)
            if not isinstance(target, str):
                networks.append((target, port))
                continue
            ports_of = named.get(target, set())
            if port is None or ports_of is None:
                named[target] = None  # an entry without a port wins: every port
            else:
                named[target] = ports_of | {port}
        self._named = {k: None if v is None else frozenset(v) for k, v in named.items()}
        self._networks = tuple(networks)
        # check_url's verdict by "scheme://authority": the same few hosts come on every call.
        self._verdicts: dict[str, tuple[str, str | None]] = {}

    def _name_opens(self, name: str, port: int | None) -> bool:
        if name not in self._named:
            return False
        ports = self._named[name]
        return ports is None or port in ports

    def _opens(self, ip: IPAddress, port: int | None) -> bool:
        return any(
            net.version == ip.version and ip in net and (only is None or only == port)
            for net, only in self._networks
        )

    def _port_reason(self, port: int | None) -> str | None:
        if port is None or port in self.ports:
            return None
        listed = ", ".join(str(p) for p in sorted(self.ports)) or "none"
        return (
            f"port {port} is not allowed (hosts not named in egress.allow are reached only on "
            f"ports {listed}; egress.ports changes the list)"
        )

    def _denied(self, address: IPAddress, port: int | None) -> str | None:
        """The deny table, then ``is_global``; IPv4 inside IPv6 forms is judged as IPv4."""
        reason = _table_reason(address)
        if reason is not None or not isinstance(address, IPv6Address):
            return reason or _global_reason(address)
        forms = _embedded_ipv4(address)
        for form, embedded in forms:
            if self._opens(embedded, port):
                continue
            inner = _table_reason(embedded) or _global_reason(embedded)
            if inner is not None:
                return f"{inner}, embedded as {form} {embedded} in {address}"
        # The IPv6 wrapper of a public IPv4 address is not itself "global" to the stdlib.
        return None if forms else _global_reason(address)

    def check_address(self, ip: IPAddress | str, port: int | None = None) -> str | None:
        """Return why ``ip`` (an address, or its text) may not be reached; None if it may.

        ``port`` None means "any port the policy allows": entries with a port do not apply and
        the port list is not consulted.
        """
        address = ip_address(ip) if isinstance(ip, str) else ip
        if not self.enabled or self._opens(address, port):
            return None
        return self._denied(address, port) or self._port_reason(port)

    def check_host_name(self, host: str, port: int | None = None) -> None:
        """Refuse a URL host before any lookup: denied names, odd numerals, denied IP literals.

        Call this for every request (:meth:`check_url` does): an IP literal is never looked
        up. With ``port``, the port list applies to an IP literal here;
        for a name it applies once its addresses are known (:meth:`resolve`), since an
        ``egress.allow`` network may open that port for them.

        Raises:
            EgressBlocked: The host may not be reached.
        """
        if not self.enabled:
            return
        name = _normalize_name(host)
        if self._name_opens(name, port):
            return
        literal = parse_ip_literal(host)
        if literal is not None:
            if not literal.canonical:
                raise EgressBlocked(host, NON_CANONICAL)
            reason = self.check_address(literal.address, port)
            if reason is not None:
                raise EgressBlocked(host, reason)
            return
        if not name or any(c in name for c in ":[]%\\/@ ") or not name.isascii():
            raise EgressBlocked(host, "malformed host")
        if _ends_in_number(name):
            raise EgressBlocked(host, NON_CANONICAL)
        reason = _denied_name_reason(name)
        if reason is not None:
            raise EgressBlocked(host, reason)

    def check_url(self, url: str) -> None:
        """Check a whole URL as it is about to be sent: scheme, host and port.

        A URL the URL parser refuses (``http://127.0.0.1\\.api.example.com/``) is blocked
        here, as a result, instead of failing later as an internal error.

        Raises:
            EgressBlocked: The URL is malformed or its destination may not be reached.
        """
        head = url.split("://", 1)
        authority = re.split(r"[/?#]", head[-1], maxsplit=1)[0]
        origin = f"{head[0]}://{authority}" if len(head) == 2 else url
        verdict = self._verdicts.get(origin)
        if verdict is None:
            verdict = self._verdict(origin, authority)
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[origin] = verdict
        host, reason = verdict
        if reason is not None:
            raise EgressBlocked(host, reason)

    def _verdict(self, origin: str, authority: str) -> tuple[str, str | None]:
        """``(host, reason)`` for a URL's ``scheme://authority``; reason None when allowed."""
        try:
            parsed = URL(origin)
            host, port, scheme = parsed.raw_host, parsed.port, parsed.scheme
        except (TypeError, ValueError) as e:
            return authority, f"malformed URL ({e})"
        if scheme not in {"http", "https"} or not host:
            return authority, "malformed URL (expected http(s)://host/...)"
        try:
            self.check_host_name(host, port)
        except EgressBlocked as e:
            return e.host, e.reason
        return host, None

    def save_time_refusal(self, host: str, port: int) -> str | None:
        """Why a URL with this fixed host and port will be refused, as far as is known before
        any lookup (for save-time checks); None when it may be reached."""
        try:
            self.check_host_name(host, port)
            if parse_ip_literal(host) is None and not self._name_opens(_normalize_name(host), port):
                # Refused now only if no egress.allow network could open the port after lookup.
                reason = self._port_reason(port)
                if reason and not any(only in {None, port} for _, only in self._networks):
                    raise EgressBlocked(host, reason)
        except EgressBlocked as e:
            where = _host_text(host, port)
            if e.reason == NON_CANONICAL:
                hint = "write an IPv4 address as four decimal numbers, e.g. 10.0.0.5"
            elif e.reason.startswith(f"port {port} "):
                hint = f"add '{where}' to egress.allow or {port} to egress.ports to open it"
            else:
                bare = where.rsplit(":", 1)[0]
                hint = f"add '{where}' (or '{bare}' for every port) to egress.allow to open it"
            return f"the egress policy refuses {where}: {e.reason}; {hint}"
        return None

    async def resolve(
        self, host: str, port: int = 0, *, lookup: Lookup | None = None
    ) -> list[IPAddress]:
        """Resolve ``host`` and return its addresses (in lookup order, deduplicated), all checked.

        ``lookup`` defaults to :func:`system_lookup` (the event loop's ``getaddrinfo``). A
        ``port`` of 0 means "unknown": the port list is not applied.

        Raises:
            EgressBlocked: The host is refused, does not resolve, any address is denied, or the
                port is not allowed for the addresses it resolves to.
            OSError: The lookup itself failed (e.g. ``socket.gaierror`` for an unknown name).
        """
        known_port = port or None
        self.check_host_name(host, known_port)
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
        if self.enabled and not self._name_opens(_normalize_name(host), known_port):
            for address in addresses:
                if self._opens(address, known_port):
                    continue
                reason = self._denied(address, known_port)
                if reason is not None:
                    raise EgressBlocked(host, f"resolves to {address}: {reason}")
                port_reason = self._port_reason(known_port)
                if port_reason is not None:
                    raise EgressBlocked(host, port_reason)
        return addresses


_MAX_VERDICTS = 4096


def _parse_ports(ports: Iterable[int]) -> frozenset[int]:
    if isinstance(ports, str | bytes):
        raise ConfigError("egress.ports must be a list of port numbers, e.g. [80, 443]")
    out: set[int] = set()
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"egress.ports: {port!r} is not a port number (1 to 65535)")
        out.add(port)
    return frozenset(out)


def _split_port(text: str, invalid: Callable[[str], ConfigError]) -> tuple[str, int | None]:
    """Split ``host:port`` / ``[v6]:port``; a bare IPv6 address has no port."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise invalid("write an IPv6 address with a port as [address]:port")
        host, port_text = inside, rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        return text, None
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise invalid("the port must be a number from 1 to 65535")
    return host, int(port_text)


def _parse_allow_entry(entry: str) -> tuple[str | IPNetwork, int | None]:
    def invalid(why: str) -> ConfigError:
        return ConfigError(
            f"egress.allow entry {entry!r} is not a host name, IP address or CIDR "
            f"(optionally with :port): {why}"
        )

    text = entry.strip() if isinstance(entry, str) else ""
    if not text:
        raise invalid("expected a non-empty string")
    text, port = _split_port(text, invalid)
    if "/" in text:
        try:
            return ip_network(text), port
        except ValueError as exc:
            raise invalid(str(exc)) from None
    literal = parse_ip_literal(text)
    if literal is not None:
        if not literal.canonical:
            raise invalid(f"{NON_CANONICAL}; write it as {literal.address}")
        return ip_network(str(literal.address).split("%", 1)[0]), port
    name = _normalize_name(text)
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise invalid("malformed host name (write IDNs in their xn-- form; no wildcards)")
    if _ends_in_number(name):
        raise invalid(NON_CANONICAL)
    return name, port


async def system_lookup(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the event loop's ``getaddrinfo`` (the default :data:`Lookup`).

    Raises:
        OSError: The lookup failed (``socket.gaierror``).
    """
    # No AI_ADDRCONFIG: it hides "localhost" on hosts without a non-loopback address, and the
    # client moves on quickly from an address family the host cannot reach.
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    answers: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family == socket.AF_INET:
            answers.append(str(sockaddr[0]))
        elif family == socket.AF_INET6 and len(sockaddr) >= 4:
            address, scope = str(sockaddr[0]), sockaddr[3]
            answers.append(f"{address}%{scope}" if scope and "%" not in address else address)
    return answers
