"""Per-conversation state in the database, shared by every replica.

The state is a small JSON object: captured ``lead`` fields, the client's ``user_id`` and
``channel``, the gateway's pending forms/buttons/confirmations (``pending``, by tool call id, so
only calls the model really made can be answered), and results of gateway-side calls that went
back to the client next to a client tool call (``results``, used to repair a history that lacks
them).

A conversation belongs to its agent: rows are keyed by ``(agent_id, id)``, so the same
``conversation.id`` sent to two agents names two conversations and neither sees the other's.

Two requests of one conversation may run at once, on one replica or two. Neither may lose what
the other stored, so a turn does not write its whole state back: it writes the
:class:`StateChange` it made (field by field: each ``lead`` key, each ``pending`` or ``results``
entry added or removed, ``user_id`` and ``channel``) on top of the row as it is now. Each row
carries a ``version`` that every write increments:

1. The common case costs one statement: the writer saw the row at version *v*, applies its
   change to that, and writes with ``UPDATE ... WHERE version = v`` (or, for a new
   conversation, ``INSERT ... ON CONFLICT DO NOTHING``).
2. If that touches no row, someone wrote in between: the writer locks the row (``SELECT ... FOR
   UPDATE``; ``BEGIN IMMEDIATE`` on SQLite), applies its change to what is there and writes it
   in the same transaction. Holding the lock, it cannot miss again, so there is no retry loop
   to give up on and nothing is dropped.

When both requests changed the same key (the same ``lead`` field, say), the one that writes
last wins that key; a removal (a confirmation answered) stays a removal.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.stores.db import conversations
from gateway.stores.engines import for_writes, upsert_statement

__all__ = ["NO_ROW", "ConversationStore", "Snapshot", "StateChange"]

log = logging.getLogger("actiongate.conversations")

_MISSING: Any = object()
_ATTEMPTS = 5
"""Locked merges tried before the last-resort write; one suffices unless rows are deleted."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A conversation row as one writer last read or wrote it."""

    state: dict[str, Any]
    """The row's state at ``version``; never mutated (the writer works on its own copy)."""
    version: int = 0
    """Writes the row has had (from 1); 0 when there is no row yet."""


NO_ROW = Snapshot({})
"""What a writer knows of a conversation it has not read: nothing, not even that it exists."""


@dataclass(frozen=True, slots=True)
class _MapChange:
    """The entries of one object-valued key (``lead``, ``pending``, ``results``) a turn changed."""

    put: dict[str, Any]
    removed: frozenset[str]
    present: bool
    """Whether the key exists in the writer's state (an emptied map is dropped only if not)."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """What one writer changed in a conversation's state, to replay on top of another's.

    An object-valued key changes entry by entry, any other key as a whole value.
    """

    put: dict[str, Any] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    maps: dict[str, _MapChange] = field(default_factory=dict)

    @classmethod
    def between(cls, before: dict[str, Any], after: dict[str, Any]) -> StateChange:
        """The change that turns ``before`` (what the writer loaded) into ``after``."""
        put: dict[str, Any] = {}
        removed: set[str] = set()
        maps: dict[str, _MapChange] = {}
        for key in before.keys() | after.keys():
            old, new = before.get(key, _MISSING), after.get(key, _MISSING)
            if _is_map(old) and _is_map(new):
                change = _map_change(old, new)
                if change is not None:
                    maps[key] = change
            elif new is _MISSING:
                removed.add(key)
            elif old != new:
                put[key] = new
        return cls(put, frozenset(removed), maps)

    def __bool__(self) -> bool:
        return bool(self.put or self.removed or self.maps)

    def apply(self, current: dict[str, Any]) -> dict[str, Any]:
        """A new state: ``current`` with this change on top (``current`` is left as it is)."""
        merged = {k: v for k, v in current.items() if k not in self.removed}
        merged.update(self.put)
        for key, change in self.maps.items():
            existing = merged.get(key)
            entries = existing if isinstance(existing, dict) else {}
            # Kept entries stay in place and new ones go last: `results` drops its oldest first.
            entries = {k: v for k, v in entries.items() if k not in change.removed}
            entries.update(change.put)
            if entries or change.present:
                merged[key] = entries
            else:
                merged.pop(key, None)
        return merged


def _is_map(value: Any) -> bool:
    return value is _MISSING or isinstance(value, dict)


def _map_change(old: Any, new: Any) -> _MapChange | None:
    before = {} if old is _MISSING else old
    after = {} if new is _MISSING else new
    put = {k: v for k, v in after.items() if before.get(k, _MISSING) != v}
    removed = frozenset(before.keys() - after.keys())
    if not put and not removed and (old is _MISSING) == (new is _MISSING):
        return None
    return _MapChange(put, removed, new is not _MISSING)


class ConversationStore:
    """Load conversation state and apply changes to it atomically (see the module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._locking = for_writes(engine)
        make_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert = make_insert(conversations).on_conflict_do_nothing()
        self._upsert = upsert_statement(conversations, engine.dialect)
        # Built once, like the insert: the hot path only binds values.
        c = conversations.c
        self._select = select(c.state, c.version).where(
            c.agent_id == bindparam("agent"), c.id == bindparam("conversation")
        )
        self._compare_and_set = (
            update(conversations)
            .where(
                c.agent_id == bindparam("agent"),
                c.id == bindparam("conversation"),
                c.version == bindparam("seen"),
            )
            .values(
                state=bindparam("new_state"), version=c.version + 1, updated_at=bindparam("now")
            )
        )

    async def load(self, conversation_id: str, agent_id: str) -> dict[str, Any] | None:
        """The state ``agent_id`` stored for this conversation, or None if it saved none."""
        snapshot = await self.read(conversation_id, agent_id)
        return snapshot.state if snapshot.version else None

    async def read(self, conversation_id: str, agent_id: str) -> Snapshot:
        """The row ``agent_id`` stored for this conversation (:data:`NO_ROW` if none)."""
        async with self._engine.connect() as conn:
            return await self._current(conn, conversation_id, agent_id, lock=False)

    async def save(self, conversation_id: str, agent_id: str, state: dict[str, Any]) -> Snapshot:
        """Set every key of ``state`` (and every entry of its objects), keeping the rest."""
        return await self.update(conversation_id, agent_id, StateChange.between({}, state))

    async def update(
        self,
        conversation_id: str,
        agent_id: str,
        change: StateChange,
        since: Snapshot = NO_ROW,
    ) -> Snapshot:
        """Apply ``change`` to the stored state, losing no concurrent writer's change.

        Args:
            conversation_id: The conversation.
            agent_id: Its agent.
            change: What this writer changed (:meth:`StateChange.between` what it loaded and
                what it has now).
            since: The row as this writer last read or wrote it; when it is still current the
                write is a single statement.

        Returns:
            The row as written, the ``since`` of this writer's next change.
        """
        state = change.apply(since.state)
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            if await self._write(conn, conversation_id, agent_id, state, since.version, now):
                return Snapshot(state, since.version + 1)
        for _ in range(_ATTEMPTS):
            written = await self._merge_locked(conversation_id, agent_id, change, now)
            if written is not None:
                return written
        # Only reachable if the row is deleted and created again over and over meanwhile.
        log.warning(
            "conversation %r of agent %r kept vanishing while saving; merged without a lock",
            conversation_id,
            agent_id,
        )
        async with self._engine.begin() as conn:
            current = await self._current(conn, conversation_id, agent_id, lock=False)
            state = change.apply(current.state)
            row = _row(conversation_id, agent_id, state, current.version + 1, now)
            await conn.execute(self._upsert, [row])
        return Snapshot(state, current.version + 1)

    async def claim_pending(
        self, conversation_id: str, agent_id: str, call_ids: Collection[str], since: Snapshot
    ) -> tuple[set[str], Snapshot]:
        """Take these pending entries out of the stored row; returns the ids still pending.

        Two requests that answer one confirmation, form or button at once (a double click, a
        client's retry, two replicas) both find it pending in what they loaded; only the one
        whose claim takes it out may run the action. One statement when the row is still as
        ``since``; otherwise a locked read and write.
        """
        wanted = set(call_ids)
        now = datetime.now(UTC)
        if since.version and wanted <= _pending(since.state).keys():
            state = _without_pending(since.state, wanted)
            async with self._engine.begin() as conn:
                if await self._write(conn, conversation_id, agent_id, state, since.version, now):
                    return wanted, Snapshot(state, since.version + 1)
        async with self._locking.begin() as conn:
            current = await self._current(conn, conversation_id, agent_id, lock=True)
            held = wanted & _pending(current.state).keys()
            if not held:
                return set(), current
            state = _without_pending(current.state, held)
            if await self._write(conn, conversation_id, agent_id, state, current.version, now):
                return held, Snapshot(state, current.version + 1)
        return set(), current  # the row vanished under the lock: nothing is pending any more

    async def _merge_locked(
        self, conversation_id: str, agent_id: str, change: StateChange, now: datetime
    ) -> Snapshot | None:
        """Lock the row, apply ``change`` to it and write; None if it vanished meanwhile."""
        async with self._locking.begin() as conn:
            current = await self._current(conn, conversation_id, agent_id, lock=True)
            state = change.apply(current.state)
            if await self._write(conn, conversation_id, agent_id, state, current.version, now):
                return Snapshot(state, current.version + 1)
        return None

    async def _current(
        self, conn: AsyncConnection, conversation_id: str, agent_id: str, *, lock: bool
    ) -> Snapshot:
        query = self._select.with_for_update() if lock else self._select
        key = {"agent": agent_id, "conversation": conversation_id}
        row = (await conn.execute(query, key)).first()
        if row is None:
            return NO_ROW
        state = orjson.loads(row[0])
        return Snapshot(state if isinstance(state, dict) else {}, row[1])

    async def _write(
        self,
        conn: AsyncConnection,
        conversation_id: str,
        agent_id: str,
        state: dict[str, Any],
        version: int,
        now: datetime,
    ) -> bool:
        """Write ``state`` if the row is still at ``version`` (0: only if there is no row yet).

        Returns:
            Whether a row was written: False means someone else wrote first.
        """
        if version == 0:
            row = _row(conversation_id, agent_id, state, 1, now)
            result = await conn.execute(self._insert, row)
        else:
            values = {
                "agent": agent_id,
                "conversation": conversation_id,
                "seen": version,
                "new_state": orjson.dumps(state).decode(),
                "now": now,
            }
            result = await conn.execute(self._compare_and_set, values)
        return bool(result.rowcount == 1)


def _pending(state: dict[str, Any]) -> dict[str, Any]:
    pending = state.get("pending")
    return pending if isinstance(pending, dict) else {}


def _without_pending(state: dict[str, Any], call_ids: set[str]) -> dict[str, Any]:
    kept = {k: v for k, v in _pending(state).items() if k not in call_ids}
    return {**state, "pending": kept}


def _row(
    conversation_id: str, agent_id: str, state: dict[str, Any], version: int, now: datetime
) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "id": conversation_id,
        "state": orjson.dumps(state).decode(),
        "version": version,
        "created_at": now,
        "updated_at": now,
    }
