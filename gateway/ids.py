"""Random ids: the OS's random bytes, read in blocks, and the time-sortable execution ids.

Every completion makes a conversation id, a completion id and execution ids. Each read of the
OS's random source is a system call (``getrandom``, ~5 µs on this project's machines, more than
the rest of an id), so :class:`RandomPool` reads 4,000 bytes at once and hands them out in
order. The bytes are the OS's cryptographic randomness, handed out once each; a forked child
drops what its parent had read, or both would issue the same ids.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["RandomPool", "new_execution_id", "random_hex"]


class RandomPool:
    """Random bytes from ``os.urandom``, read ``block`` bytes at a time (thread-safe)."""

    def __init__(self, block: int = 4000) -> None:
        self._block = block
        self._lock = threading.Lock()
        self._pool, self._used = b"", 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._used = b"", 0

    def take(self, n: int) -> bytes:
        """``n`` random bytes (no more than the block size), never handed out before."""
        with self._lock:
            if self._used + n > len(self._pool):
                self._pool, self._used = os.urandom(max(self._block, n)), 0
            start = self._used
            self._used = start + n
            return self._pool[start : start + n]


_POOL = RandomPool()


def random_hex(n: int) -> str:
    """``n`` random bytes as ``2 * n`` hex digits (what ``secrets.token_hex(n)`` gives)."""
    return _POOL.take(n).hex()


class _IdClock:
    """Issues UUIDv7-layout ids as 32 hex digits: sortable by time, monotonic per process."""

    def __init__(self, pool: RandomPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._last_ms = self._counter = 0

    def next(self) -> str:
        ms = time.time_ns() // 1_000_000
        # 10 random bytes per id: 62 random bits for the tail and 11 for a fresh counter start.
        bits = int.from_bytes(self._pool.take(10))
        with self._lock:
            # The 12-bit counter orders ids of one millisecond; its random start leaves room
            # for ~2000 ids before borrowing the next millisecond.
            if ms > self._last_ms:
                counter = bits >> 69
            elif self._counter < 0xFFF:
                ms, counter = self._last_ms, self._counter + 1
            else:
                ms, counter = self._last_ms + 1, bits >> 69
            self._last_ms, self._counter = ms, counter
        tail = bits & ((1 << 62) - 1)
        value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | tail
        return f"{value:032x}"


new_execution_id = _IdClock(_POOL).next
"""A new record id (32 hex digits, UUIDv7 layout); later ids sort after earlier ones."""
