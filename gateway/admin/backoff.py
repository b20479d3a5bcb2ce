"""Backoff for wrong admin tokens, per client address, on ``/api`` and the dashboard's ``/login``.

After :data:`FREE_FAILURES` wrong tokens from one address, that address is refused with a 429
and ``Retry-After`` for a window that doubles with every further wrong token (from
:data:`BASE_S` up to :data:`CAP_S`); a right token resets it. While the window is open the
token is not even checked, so guesses sent then learn nothing (the right token included).

Refused at once rather than delayed: a delayed answer holds a connection and a task per guess,
so an attacker opening many connections would make the server hold many sleeping requests,
and it would still be guessing in parallel. A 429 costs the server nothing and stops the
guessing from that address for the window.

Addresses are counted separately, so an attacker's failures never lock out the real admin at
another address; IPv6 addresses are counted per /64, the block one host usually has. At most
:data:`MAX_ADDRESSES` addresses are remembered (the least recently failed are forgotten first)
and an address quiet for :data:`FORGET_AFTER_S` starts afresh, so memory stays bounded however
many addresses fail. Each process counts on its own (``serve --workers N`` allows N times the
attempts).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from gateway.errors import RequestError

__all__ = [
    "BASE_S",
    "CAP_S",
    "FORGET_AFTER_S",
    "FREE_FAILURES",
    "MAX_ADDRESSES",
    "Backoff",
    "TooManyAttempts",
    "backoff_of",
    "client_address",
]

FREE_FAILURES = 5
"""Wrong tokens an address may send before it is refused."""
BASE_S = 1.0
"""The first refusal window; each further wrong token doubles it."""
CAP_S = 300.0
"""The longest refusal window."""
MAX_ADDRESSES = 10_000
"""Addresses remembered at once (about 1 MB)."""
FORGET_AFTER_S = 3600.0
"""An address with no wrong token for this long starts afresh."""

_STATE_KEY = "admin_backoff"


class TooManyAttempts(RequestError):
    """429: too many wrong admin tokens from this address; ``retry_after_s`` says for how long."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(
            429,
            f"too many wrong admin tokens from this address; retry in {self.retry_after_s} s",
            "too_many_attempts",
            kind="rate_limit_error",
            headers={"Retry-After": str(self.retry_after_s)},
        )


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    blocked_until: float = 0.0


class Backoff:
    """Failure counts per client address, with exponentially growing refusal windows."""

    def __init__(
        self,
        *,
        free: int = FREE_FAILURES,
        base_s: float = BASE_S,
        cap_s: float = CAP_S,
        max_addresses: int = MAX_ADDRESSES,
        forget_after_s: float = FORGET_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an empty backoff (defaults: the module's constants; ``clock`` for tests)."""
        self.free = free
        self.base_s = base_s
        self.cap_s = cap_s
        self.max_addresses = max_addresses
        self.forget_after_s = forget_after_s
        self.clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def _current(self, address: str, now: float) -> _Failures | None:
        entry = self._failures.get(address)
        if entry is not None and now - entry.last > self.forget_after_s:
            del self._failures[address]
            return None
        return entry

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try a token again (0: it may now)."""
        now = self.clock()
        entry = self._current(address, now)
        return max(0.0, entry.blocked_until - now) if entry is not None else 0.0

    def check(self, address: str) -> None:
        """Refuse ``address`` while its window is open.

        Raises:
            TooManyAttempts: the address must wait (the error says how long).
        """
        wait = self.retry_after(address)
        if wait > 0:
            raise TooManyAttempts(wait)

    def failed(self, address: str) -> float:
        """Count a wrong token from ``address``; the window it opens (0 while still free)."""
        now = self.clock()
        entry = self._current(address, now)
        if entry is None:
            entry = self._failures[address] = _Failures(0, now)
        entry.count += 1
        entry.last = now
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        if entry.count < self.free:
            return 0.0
        window = min(self.cap_s, self.base_s * 2.0 ** min(entry.count - self.free, 64))
        entry.blocked_until = now + window
        return window

    def succeeded(self, address: str) -> None:
        """The right token came from ``address``: forget its failures."""
        self._failures.pop(address, None)


def client_address(request: Request) -> str:
    """The key an address is counted under: the IPv4 address, or the IPv6 address's /64.

    The address is the socket peer as the server reports it (behind a reverse proxy, uvicorn's
    ``--forwarded-allow-ips`` makes it the forwarded client).
    """
    host = request.client.host if request.client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def backoff_of(app: Any) -> Backoff:
    """The app's one :class:`Backoff`, shared by ``/api`` and ``/login`` (made on first use)."""
    state = app.state
    found = getattr(state, _STATE_KEY, None)
    if not isinstance(found, Backoff):
        found = Backoff()
        setattr(state, _STATE_KEY, found)
    return found
