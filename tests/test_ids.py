"""Random ids: every byte of the OS's randomness handed out once, in threads and across fork."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from gateway import ids
from gateway.engine.context import new_conversation_id
from gateway.ids import RandomPool, new_execution_id, random_hex


def counting_urandom(reads: list[int]) -> Callable[[int], bytes]:
    """An ``os.urandom`` stand-in whose bytes count up, so a byte handed out twice shows."""
    state = {"next": 0}

    def urandom(n: int) -> bytes:
        reads.append(n)
        start = state["next"]
        state["next"] = start + n
        return bytes((start + i) % 256 for i in range(n))

    return urandom


def test_the_pool_hands_out_each_byte_once_and_reads_in_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []
    monkeypatch.setattr(ids.os, "urandom", counting_urandom(reads))
    pool = RandomPool(block=16)
    taken = [pool.take(5) for _ in range(6)]  # 3 per block: the fourth needs a fresh read
    assert reads == [16, 16]
    assert b"".join(taken[:3]) == bytes(range(15))  # the block's last byte is left unused
    assert b"".join(taken[3:]) == bytes(range(16, 31))
    assert pool.take(40) == bytes(range(32, 72))  # more than a block: one read of that size
    assert reads == [16, 16, 40]


def test_ids_from_many_threads_are_all_different() -> None:
    found: list[list[str]] = [[] for _ in range(8)]

    def issue(out: list[str]) -> None:
        for _ in range(2000):
            out.append(random_hex(16))
            out.append(new_execution_id())

    threads = [threading.Thread(target=issue, args=(out,)) for out in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for out in found for i in out]
    assert len(set(every)) == len(every) == 8 * 4000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_its_parents_unread_bytes() -> None:
    random_hex(1)  # the pool holds unread bytes now, in parent and child alike
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write_end, (random_hex(16) + new_execution_id()).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    theirs = os.read(read_end, 64).decode()
    os.close(read_end)
    ours = random_hex(16) + new_execution_id()
    assert len(theirs) == len(ours) == 64
    assert theirs[:32] != ours[:32]
    assert theirs[-16:] != ours[-16:]  # the execution ids' random tails


def test_conversation_ids_carry_128_random_bits() -> None:
    made = {new_conversation_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(c.startswith("conv_") and len(c) == 37 for c in made)
    assert all(int(c[5:], 16) >= 0 for c in made)
