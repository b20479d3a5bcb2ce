"""A process of its own holding :class:`RedisLimits`, driven by JSON lines on stdin, so tests can
check that limits hold across real processes (``python -m tests.support.limits_worker``).

Each command line gets one JSON reply line:

- ``{"op": "configure", "limits": {...}, "lease_s"?: S}``: new limits (permits held are dropped).
- ``{"op": "acquire", "tool": T, "conversation": C | null, "n": N}``: N acquires at once;
  ``{"permits": [{"handle", "trial"}], "refused": [reason, ...]}``.
- ``{"op": "release", "handles": [...], "failed": bool}``: release those permits.
- ``{"op": "snapshot"}``: ``{"backend", "actions"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from gateway.definitions.config import LimitsConfig
from gateway.engine.limits import Permit
from gateway.engine.redis_limits import LEASE_S, RedisLimits


class Worker:
    def __init__(self) -> None:
        self.limits: RedisLimits | None = None
        self.held: dict[int, Permit] = {}
        self.next_handle = 0

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "configure":
            if self.limits is not None:
                await self.limits.close()
            config = LimitsConfig(**command["limits"])
            self.limits = RedisLimits(config, lease_s=command.get("lease_s", LEASE_S))
            self.held.clear()
            return {}
        assert self.limits is not None, "configure first"
        if op == "acquire":
            tool, conversation = command["tool"], command["conversation"]
            calls = [self.limits.acquire(tool, conversation) for _ in range(command["n"])]
            return self._permits(list(await asyncio.gather(*calls)))
        if op == "release":
            for handle in command["handles"]:
                await self.limits.release(self.held.pop(handle), failed=command["failed"])
            return {}
        if op == "snapshot":
            return {"backend": self.limits.backend, "actions": self.limits.snapshot()}
        raise ValueError(f"unknown op {op!r}")

    def _permits(self, results: list[Permit | str]) -> dict[str, Any]:
        permits, refused = [], []
        for result in results:
            if isinstance(result, str):
                refused.append(result)
                continue
            assert result.lease is not None, "counted in the process, not in Redis"
            self.next_handle += 1
            self.held[self.next_handle] = result
            permits.append({"handle": self.next_handle, "trial": result.trial})
        return {"permits": permits, "refused": refused}


async def main() -> None:
    worker = Worker()
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        reply = await worker.handle(json.loads(line))
        print(json.dumps(reply), flush=True)
    if worker.limits is not None:
        await worker.limits.close()


if __name__ == "__main__":
    asyncio.run(main())
