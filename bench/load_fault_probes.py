"""Probes beside the faulty load of ``load_fault.py``: shared rate limit, lost updates, memory.

- **Rate-limit probe.** A few conversations of the ``rate_probe`` agent (its upstream always
  calls ``rate_probe``, an action on the faulty API's ``/ok``) are each driven by several
  closed-loop clients at once, through every replica round-robin, so each conversation asks
  for far more action calls than ``limits.rate`` per ``limits.per_s`` allows. The audit reads
  the execution records: a call that passed the limit (any outcome but ``rejected``) was
  counted in the conversation's sliding window; refusals carry the rate-limit text. With
  ``limits.redis`` the count in every window of ``per_s`` seconds must stay at or below
  ``rate`` across replicas and workers; without it each process counts on its own, so up to
  processes x rate calls get through (the contrast).
- **Lost-update probe.** Conversations of the ``lead_probe`` agent (``ui: text``, one form whose
  fields map to ``lead.f0`` … ``lead.fK``) run rounds of K requests at once, spread over the
  replicas round-robin. Each request's model (:func:`lead_upstream_app`) fills in one field
  with a value unique to the round, after a barrier that holds every request of the round
  until all K have loaded the conversation, so all of them start from the same stored state
  and save on top of each other. After each round the script reads the stored conversation
  row and checks that every field a client was told was captured (the form's tool result in
  the response's ``actiongate.messages``) holds that request's value.
- **Memory per process.** ``serve --workers N`` is a parent and N worker interpreters; RSS is
  sampled for each process of each replica's tree (``/proc``), so the parent and every worker
  get a peak of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from harness import markdown_table

RATE_AGENT = "rate_probe"
RATE_MARKER = "action calls in"
"""In the rate limit's refusal text (``gateway.engine.limits.rate_reason``)."""
RATE_CLIENTS_PER_CONVERSATION = 8
RATE_TOLERANCE_S = 1.0
"""Slack on a window's length for the verdict: a record's start (its ``timestamp`` minus
``duration_ms``) comes a little before the limit check, whose time Redis takes."""

LEAD_AGENT = "lead_probe"
LEAD_TOOL = "lead_form"
LEAD_PARTIES = 4
"""Requests per round of a lead conversation, each capturing its own field."""
LEAD_BARRIER_S = 3.0
"""How long the lead upstream holds a round's requests for the rest to arrive."""

JSON = {"Content-Type": "application/json"}


# --- the gateway config ---------------------------------------------------------------------


def lead_config(upstream_port: int, host: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lead probe's agent and form action."""
    fields = [{"name": f"f{k}", "maps_to": f"lead.f{k}"} for k in range(LEAD_PARTIES)]
    agent = {
        "id": LEAD_AGENT,
        "ui": "text",
        "upstream": {"base_url": f"http://{host}:{upstream_port}/v1"},
        "actions": [LEAD_TOOL],
    }
    action = {
        "name": LEAD_TOOL,
        "tool_name": LEAD_TOOL,
        "type": "form",
        "description": "The customer's details.",
        "fields": fields,
    }
    return agent, action


# --- the lead upstream ----------------------------------------------------------------------


def _completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def lead_upstream_app() -> web.Application:
    """A model that fills in the one form field its user message names, after a barrier.

    The user message is JSON: ``{"round": KEY, "field": "f2", "value": "..."}``. The first call
    of a request waits until :data:`LEAD_PARTIES` calls of the same round have arrived (or
    :data:`LEAD_BARRIER_S` passed), then calls the form tool; the tool call id says whether the
    barrier was met (``…-met``) or timed out (``…-late``). A call ending with a tool result gets
    a text answer.
    """
    arrived: dict[str, int] = defaultdict(int)
    full: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def complete(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("stream"):
            raise web.HTTPBadRequest(text="the lead probe's clients do not stream")
        last = body["messages"][-1]
        if last["role"] == "tool":
            return web.json_response(_completion({"role": "assistant", "content": "ok"}, "stop"))
        ask = orjson.loads(last["content"])
        key = ask["round"]
        arrived[key] += 1
        if arrived[key] >= LEAD_PARTIES:
            full[key].set()
        met = True
        try:
            async with asyncio.timeout(LEAD_BARRIER_S):
                await full[key].wait()
        except TimeoutError:
            met = False
        call = {
            "id": f"call-{ask['field']}-{'met' if met else 'late'}",
            "type": "function",
            "function": {
                "name": LEAD_TOOL,
                "arguments": orjson.dumps({ask["field"]: ask["value"]}).decode(),
            },
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return web.json_response(_completion(message, "tool_calls"))

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "scripted"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_get("/v1/models", models)
    return app


# --- reading stored conversations -----------------------------------------------------------


class StateReader:
    """Reads a conversation's stored ``lead`` while the gateways run (SQLite or PostgreSQL)."""

    def __init__(self, url: str, path: Path | None) -> None:
        self.url = url
        self.path = path
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def lead(self, conversation_id: str, agent_id: str) -> dict[str, Any]:
        query = "SELECT state FROM conversations WHERE agent_id = {a} AND id = {c}"
        if self.path is not None:
            return await asyncio.to_thread(self._sqlite_lead, query, conversation_id, agent_id)
        async with self._lock:  # one connection: a read after each round is all it does
            if self._conn is None:
                import asyncpg

                self._conn = await asyncpg.connect(self.url, timeout=10)
            sql = query.format(a="$1", c="$2")
            row = await self._conn.fetchrow(sql, agent_id, conversation_id)
        return _lead_of(row["state"] if row else None)

    def _sqlite_lead(self, query: str, conversation_id: str, agent_id: str) -> dict[str, Any]:
        assert self.path is not None
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
            row = conn.execute(query.format(a="?", c="?"), (agent_id, conversation_id)).fetchone()
        return _lead_of(row[0] if row else None)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _lead_of(state: str | None) -> dict[str, Any]:
    lead = orjson.loads(state).get("lead") if state else None
    return lead if isinstance(lead, dict) else {}


# --- the lead probe's clients ---------------------------------------------------------------


@dataclass
class LeadAudit:
    """What the lead probe's clients were told, and what the store held after each round."""

    rounds: int = 0
    rounds_all_met: int = 0
    """Rounds where every request passed the barrier together: all had loaded before any saved."""
    requests: int = 0
    told: int = 0
    """Fields a client was told were captured."""
    lost: list[tuple[str, str, str, Any]] = field(default_factory=list)
    """(conversation, field, value told, value stored) for each told field not stored."""
    stored_untold: int = 0
    """Fields stored with a value whose request's client got no confirmation (an error)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    conversations: set[str] = field(default_factory=set)
    last_told: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per conversation, the last value each field's client was told was captured."""
    final_checked: int = 0
    final_lost: list[tuple[str, str, str, Any]] = field(default_factory=list)
    """Told fields whose value was gone once every gateway had exited."""


async def _capture(
    session: aiohttp.ClientSession, url: str, conversation: str, ask: dict[str, str]
) -> tuple[str, bool, bool]:
    """One lead request: (what the client saw, told captured, barrier met)."""
    body = {
        "model": LEAD_AGENT,
        "messages": [{"role": "user", "content": orjson.dumps(ask).decode()}],
        "conversation": {"id": conversation},
    }
    try:
        async with session.post(url, data=orjson.dumps(body), headers=JSON) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return f"http_{resp.status}", False, False
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        return f"transport:{type(e).__name__}", False, False
    messages = orjson.loads(raw)["actiongate"]["messages"]
    # The form's tool result, as the model reads it (gateway/proxy/interactive.py): only a
    # form that passed validation and was captured says so.
    submitted = f"The customer submitted the form '{LEAD_TOOL}': "
    told = any(
        m.get("role") == "tool"
        and (m.get("content") or "").startswith(submitted)
        and ask["value"] in m["content"]
        for m in messages
    )
    met = any(
        call["id"].endswith("-met")
        for m in messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
    )
    return ("ok" if told else "ok_not_captured"), told, met


async def lead_loop(
    session: aiohttp.ClientSession,
    urls: Callable[[], str],
    conversation: str,
    deadline: float,
    reader: StateReader,
    audit: LeadAudit,
) -> None:
    """Rounds of :data:`LEAD_PARTIES` concurrent captures on one conversation until the deadline.

    ``urls`` gives the next replica's completions URL (round-robin, shared with the rest).
    """
    audit.conversations.add(conversation)
    last_told = audit.last_told.setdefault(conversation, {})
    round_no = 0
    while time.monotonic() < deadline:
        round_no += 1
        key = f"{conversation}/{round_no}"
        asks = [
            {"round": key, "field": f"f{k}", "value": f"{conversation}-r{round_no}-f{k}"}
            for k in range(LEAD_PARTIES)
        ]
        seen = await asyncio.gather(*(_capture(session, urls(), conversation, a) for a in asks))
        stored = await reader.lead(conversation, LEAD_AGENT)
        audit.rounds += 1
        audit.rounds_all_met += all(met for _, _, met in seen)
        for ask, (kind, told, _) in zip(asks, seen, strict=True):
            audit.requests += 1
            audit.outcomes[kind] += 1
            name, value = ask["field"], ask["value"]
            if told:
                audit.told += 1
                last_told[name] = value
                if stored.get(name) != value:
                    audit.lost.append((conversation, name, value, stored.get(name)))
            elif stored.get(name) == value:
                audit.stored_untold += 1


def _round_of(value: Any) -> int:
    """The round number in a lead value (``CONVERSATION-r12-f3``); 0 for anything else."""
    with contextlib.suppress(AttributeError, IndexError, ValueError):
        return int(str(value).rsplit("-r", 1)[1].split("-", 1)[0])
    return 0


async def check_final(reader: StateReader, audit: LeadAudit) -> None:
    """Once the gateways are gone: each field holds the last value a client was told of."""
    for conversation, told in audit.last_told.items():
        stored = await reader.lead(conversation, LEAD_AGENT)
        for name, value in told.items():
            audit.final_checked += 1
            # A later round's request may have saved its value and then failed to answer.
            if stored.get(name) != value and _round_of(stored.get(name)) <= _round_of(value):
                audit.final_lost.append((conversation, name, value, stored.get(name)))


# --- the rate-limit audit -------------------------------------------------------------------


@dataclass(frozen=True)
class RateRow:
    conversation: str
    counted: int
    """Calls that passed the limit (any outcome but ``rejected``)."""
    refused: int
    """Calls refused by the rate limit."""
    refused_seen: int
    """Of those, refusals a client was told of (in its response's executions)."""
    other_rejected: int
    max_window: int
    """Most counted calls in any window of ``per_s`` seconds (record start times)."""
    max_window_slack: int
    """The same, in windows :data:`RATE_TOLERANCE_S` shorter: the verdict's measure."""
    span_s: float


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.timestamp()
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()


def _max_in_window(times: list[float], width: float) -> int:
    """Most of the sorted ``times`` inside any half-open window ``[t, t + width)``."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def rate_audit(records: list[dict[str, Any]], seen: Collection[str], per_s: float) -> list[RateRow]:
    """Per rate-probe conversation: calls counted, refusals (``seen``: execution ids clients
    were told of), and the fullest window."""
    by_conversation: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["agent_id"] == RATE_AGENT:
            by_conversation[record["conversation_id"]].append(record)
    rows = []
    for conversation, found in sorted(by_conversation.items()):
        counted = sorted(
            _epoch(r["timestamp"]) - r["duration_ms"] / 1000
            for r in found
            if r["outcome"] != "rejected"
        )
        refusals = [
            r for r in found if r["outcome"] == "rejected" and RATE_MARKER in (r["error"] or "")
        ]
        refused = len(refusals)
        other = sum(1 for r in found if r["outcome"] == "rejected") - refused
        rows.append(
            RateRow(
                conversation,
                len(counted),
                refused,
                sum(1 for r in refusals if r["id"] in seen),
                other,
                _max_in_window(counted, per_s),
                _max_in_window(counted, per_s - RATE_TOLERANCE_S),
                counted[-1] - counted[0] if counted else 0.0,
            )
        )
    return rows


# --- memory per process ---------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/PID/task/*/children``), parents first."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return tree


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class TreeSamples:
    """RSS samples of each process of one replica, by role: ``parent``, ``worker-1`` …"""

    roles: dict[int, str] = field(default_factory=dict)
    samples: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def sample(self, root: int) -> int:
        """Sample every process under ``root``; their total RSS in KiB."""
        total = 0
        for pid in process_tree(root):
            if pid not in self.roles:
                n = len(self.roles)
                self.roles[pid] = "parent" if n == 0 else f"worker-{n}"
            kb = rss_kb(pid)
            if kb:
                self.samples[self.roles[pid]].append(kb)
                total += kb
        return total


# --- metrics --------------------------------------------------------------------------------


async def read_metrics(session: aiohttp.ClientSession, url: str, token: str) -> dict[str, float]:
    """Sums of a few series of ``/metrics`` (summed over the workers by the gateway)."""
    wanted = (
        "actiongate_limits_fallback_total",
        "actiongate_log_records_dropped_total",
        "actiongate_limits_backend",
    )
    found: dict[str, float] = defaultdict(float)
    headers = {"Authorization": f"Bearer {token}"}
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with session.get(url + "/metrics", headers=headers) as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith(wanted):
                name, _, value = line.rpartition(" ")
                found[name] += float(value)
    return dict(found)


def flush_redis(url: str) -> None:
    """Empty the one Redis database the run uses (the URL's number), nothing else."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


# --- the report -----------------------------------------------------------------------------


def render_rate(
    rows: list[RateRow], rate: int, per_s: float, processes: int, fallbacks: float, shared: bool
) -> tuple[list[str], bool]:
    """The rate-limit probe's table and verdict lines; True when the shared limit failed.

    ``fallbacks``: limit checks (``acquire``) counted in a process because Redis did not answer.
    """
    where = "shared through Redis" if shared else "counted in each process"
    lines = [
        f"Rate-limit probe: limits.rate {rate} per {per_s:g} s, {where}; {len(rows)} "
        f"conversations x {RATE_CLIENTS_PER_CONVERSATION} clients, replicas round-robin; "
        f"{processes} gateway processes, so {processes * rate} calls per window at most "
        "if each counts alone.",
        "",
    ]
    headers = [
        "conversation",
        "calls counted",
        "refused: rate limit",
        "… told to a client",
        "rejected otherwise",
        f"most in any {per_s:g} s window",
        f"most in any {per_s - RATE_TOLERANCE_S:g} s window",
        "span s",
        "within the rate",
    ]
    table = [
        (
            r.conversation,
            r.counted,
            r.refused,
            r.refused_seen,
            r.other_rejected,
            r.max_window,
            r.max_window_slack,
            r.span_s,
            "yes" if r.max_window_slack <= rate else "no",
        )
        for r in rows
    ]
    lines += [markdown_table(headers, table), ""]
    over = [r for r in rows if r.max_window_slack > rate]
    excess = max((r.max_window_slack - rate for r in over), default=0)
    failed = False
    if not rows:
        lines.append("The rate-limit probe made no calls.")
    elif shared and excess > fallbacks:
        # Only a check counted in a process (Redis unreachable) can let a call past Redis's
        # count, so a window can hold at most rate + that many checks.
        failed = True
        lines.append(
            f"**The shared rate limit did not hold**: {excess} calls over the rate in one "
            f"window, more than the {fallbacks:g} checks counted in a process (Redis fallback)."
        )
    elif shared and over:
        lines.append(
            f"The limit was exceeded by up to {excess} calls in {len(over)} conversation(s); "
            f"{fallbacks:g} checks fell back to per-process counting (Redis did not answer in "
            "0.25 s), which is as documented and bounds the excess."
        )
    elif shared:
        lines.append(
            f"The shared limit held in every window ({fallbacks:g} checks fell back to "
            "per-process counting)."
        )
    else:
        most = max(r.max_window for r in rows)
        lines.append(
            f"Without Redis the busiest window let {most} calls through ({most / rate:.1f} x "
            f"the rate; at most {processes} x as documented)."
        )
    return lines, failed


def render_lead(audit: LeadAudit) -> tuple[list[str], bool]:
    """The lost-update probe's table and verdict lines; True when a captured field was lost."""
    summary = [
        ("conversations", len(audit.conversations)),
        (f"rounds ({LEAD_PARTIES} requests at once, replicas round-robin)", audit.rounds),
        ("… all loaded before any saved (barrier met by all)", audit.rounds_all_met),
        ("requests", audit.requests),
        ("fields clients were told were captured", audit.told),
        ("… not stored right after their round (lost updates)", len(audit.lost)),
        ("told fields checked after shutdown", audit.final_checked),
        ("… with an older value or missing then", len(audit.final_lost)),
        ("fields stored whose client got an error", audit.stored_untold),
    ]
    lines = [markdown_table(["lost-update probe", "value"], summary), ""]
    seen = ", ".join(f"{kind} {n}" for kind, n in audit.outcomes.most_common())
    lines.append(f"Lead requests as clients saw them: {seen}.")
    for conversation, name, told, stored in (audit.lost + audit.final_lost)[:10]:
        lines.append(f"Lost: {conversation} lead.{name} told {told!r}, stored {stored!r}")
    lines.append("")
    return lines, bool(audit.lost or audit.final_lost)


def render_processes(trees: list[TreeSamples]) -> list[str]:
    """Peak and last RSS of every process of every replica."""
    rows = []
    for i, tree in enumerate(trees):
        for role, samples in tree.samples.items():
            rows.append(
                (f"gateway-{i}", role, len(samples), max(samples) / 1024, samples[-1] / 1024)
            )
    headers = ["replica", "process", "samples", "peak RSS MiB", "last RSS MiB"]
    return [markdown_table(headers, rows), ""]
