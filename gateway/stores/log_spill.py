"""The execution log's spill file: where records go when the writer's buffer is full.

A flood of refusals can submit records faster than the database stores them. Rather than drop
the oldest waiting records, :class:`~gateway.stores.logs.LogStore` moves them, already redacted,
to this append-only file of JSON lines, and its writer stores them from there (oldest first,
before anything submitted later, so a record's last version still wins), also after a restart.
Only when the file reaches its size bound are records dropped, counted and logged.

Layout: a fixed-width first line holds the offset up to which the lines have been stored; it is
rewritten in place after each stored batch, before the writer stores anything else, so a crash
in between replays at most that one batch, an idempotent upsert of the same versions. When
everything is stored the file is cut back to that line (and removed at close).

Durability: lines are written to the OS at once (a crash of actiongate loses nothing), but not
forced to disk until the store closes (``fsync``), so a machine crash or power loss may lose
the spilled records not yet stored: the same promise the in-memory buffer makes, kept for a much
larger backlog. One process owns a file at a time (an exclusive ``flock``): each of several
processes on one database (``serve --workers``) takes the first free of a few numbered files,
and a process starting up takes over one an earlier run left rows in.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

__all__ = ["DEFAULT_SPILL_MAX_BYTES", "SPILL_SLOTS", "LogSpill", "SpillBusyError", "spill_path_for"]

logger = logging.getLogger("actiongate.logs")

DEFAULT_SPILL_MAX_BYTES = 256 * 1024 * 1024
"""The spill file's default bound: some 500,000 refusal records."""

SPILL_SLOTS = 16
"""Spill files a database may have: one per process (``serve --workers``) writing to it."""

_HEADER = b"actiongate-log-spill v1 stored-up-to=%020d\n"
_HEADER_SIZE = len(_HEADER % 0)


def spill_path_for(database_file: Path) -> Path:
    """The spill file of a SQLite database: ``<database>.log-spill.jsonl`` beside it."""
    return database_file.with_name(database_file.name + ".log-spill.jsonl")


class SpillBusyError(OSError):
    """Another process holds the spill file."""


class LogSpill:
    """An append-only file of JSON-line rows with a persistent read position.

    Use from one thread. Rows are dicts of JSON-ready values; :meth:`read` returns them in the
    order :meth:`append` wrote them, and :meth:`mark_stored` moves the position past them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = DEFAULT_SPILL_MAX_BYTES,
        *,
        slots: int = 1,
    ) -> None:
        """Name the file; nothing is opened until :meth:`open`.

        Args:
            path: The spill file (created when first needed).
            max_bytes: Most bytes the file may hold, header included.
            slots: Files that may be used, for as many processes on one database (workers):
                ``path`` and then ``NAME.1.jsonl``, ``NAME.2.jsonl``... beside it.
        """
        self.base = Path(path)
        self.slots = max(1, slots)
        self.path = self.base
        """The file in use (or the first candidate, before :meth:`open`)."""
        self.max_bytes = max(max_bytes, _HEADER_SIZE + 1)
        self.records = 0
        """Rows written and not yet marked stored."""
        self.torn = 0
        """Rows found cut short by a crash when opening (lost: the caller counts them)."""
        self._file: BinaryIO | None = None
        self._stored_to = _HEADER_SIZE  # the persisted read position
        self._read_to = _HEADER_SIZE  # where the next read starts (rows read, not yet stored)
        self._end = _HEADER_SIZE

    @property
    def is_open(self) -> bool:
        """Whether the file is open (and locked) by this process."""
        return self._file is not None

    @property
    def backlog(self) -> bool:
        """Whether rows wait in the file."""
        return self._stored_to < self._end

    def slot_path(self, slot: int) -> Path:
        """The file of slot ``slot`` (0 is the configured path)."""
        if not slot:
            return self.base
        return self.base.with_name(f"{self.base.stem}.{slot}{self.base.suffix}")

    def open(self, *, waiting_only: bool = False) -> int:
        """Open and lock the first free slot's file, recovering what an earlier run left in it.

        Args:
            waiting_only: Only take a file that holds rows (at start-up: recover them, and
                create nothing otherwise).

        Returns:
            How many rows are waiting in it. A torn last line (a crash mid-write) is cut off
            and logged.

        Raises:
            SpillBusyError: Every slot is held by another process (not with ``waiting_only``).
            OSError: A file cannot be opened.
        """
        if self._file is not None:
            return self.records
        for slot in range(self.slots):
            path = self.slot_path(slot)
            with contextlib.suppress(FileNotFoundError):
                if waiting_only and path.stat().st_size <= _HEADER_SIZE:
                    continue
            if waiting_only and not path.exists():
                continue
            try:
                return self._open_at(path)
            except SpillBusyError:
                continue
        if waiting_only:
            return 0
        raise SpillBusyError(f"{self.base} (and its other slots) are in use by other processes")

    def _open_at(self, path: Path) -> int:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # records are private data
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise SpillBusyError(f"{path} is in use by another process") from e
        file = self._file = os.fdopen(fd, "r+b")
        head = file.read(_HEADER_SIZE)
        end = file.seek(0, os.SEEK_END)
        if not end:
            file.write(_HEADER % _HEADER_SIZE)
            file.flush()
            end = stored_to = _HEADER_SIZE
        else:
            try:
                stored_to = int(head.removeprefix(_HEADER.split(b"%")[0]).rstrip(b"\n"))
            except ValueError:
                stored_to = -1
            if not _HEADER_SIZE <= stored_to <= end:
                # Not ours, or damaged: leave it for the operator rather than guess.
                self._file = None
                file.close()
                raise OSError(f"{self.path} is not a log spill file this version can read")
        self._stored_to = self._read_to = stored_to
        self._end = end
        self.records = self._count_tail()
        if self.records:
            logger.warning(
                "%d execution records wait in the log spill file %s; storing them",
                self.records,
                self.path,
            )
        return self.records

    def _count_tail(self) -> int:
        file = self._require()
        file.seek(self._stored_to)
        count, last = 0, b"\n"
        while chunk := file.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
        if last != b"\n":  # torn by a crash mid-write: that row never finished
            cut = self._cut_torn_line()
            self.torn += 1
            logger.error("log spill file %s ended in a torn row (%d bytes); cut", self.path, cut)
        return count

    def _cut_torn_line(self) -> int:
        file = self._require()
        size = self._end
        position = size
        while position > self._stored_to:
            step = min(4096, position - self._stored_to)
            file.seek(position - step)
            block = file.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                position = position - step + newline + 1
                break
            position -= step
        file.truncate(position)
        self._end = position
        return size - position

    def append(self, rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Write rows at the end, as long as they fit the bound.

        Returns:
            ``(written, refused)``: rows written, and rows that did not fit (the caller counts
            those as dropped).

        Raises:
            OSError: Writing failed (e.g. a full disk); nothing of this call is in the file.
        """
        file = self._require()
        lines, fitting = _fitting_lines(rows, self.max_bytes - self._end)
        if fitting:
            data = b"".join(lines[:fitting])
            file.seek(self._end)
            try:
                file.write(data)
                file.flush()  # to the OS now: a crash of this process loses nothing
            except OSError:
                with contextlib.suppress(OSError):
                    file.truncate(self._end)
                raise
            self._end += len(data)
            self.records += fitting
        return fitting, len(lines) - fitting

    def prepend(self, rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Write rows before those waiting (and after those read), as long as they fit.

        Rewrites the waiting rows into a new file that replaces this one: meant for the rare
        close during an outage, when the batch the writer holds is older than the file's rows.

        Returns:
            ``(written, refused)``, as :meth:`append`.
        """
        file = self._require()
        file.seek(self._stored_to)
        tail = file.read()
        lines, fitting = _fitting_lines(rows, self.max_bytes - _HEADER_SIZE - len(tail))
        if fitting:
            data = _HEADER % _HEADER_SIZE + b"".join(lines[:fitting]) + tail
            fresh = self.path.with_name(self.path.name + ".new")
            fresh.write_bytes(data)
            fresh.chmod(0o600)
            fd = os.open(fresh, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows this file yet
            os.replace(fresh, self.path)
            file.close()
            self._file = os.fdopen(fd, "r+b")
            self._stored_to = self._read_to = _HEADER_SIZE
            self._end = len(data)
            self.records += fitting
        return fitting, len(lines) - fitting

    def read(self, limit: int) -> list[dict[str, Any] | None]:
        """Up to ``limit`` rows after those already read (None for a row that does not parse).

        The rows stay in the file until :meth:`mark_stored`; reading again without marking
        continues after them.
        """
        file = self._require()
        file.seek(self._read_to)
        rows: list[dict[str, Any] | None] = []
        position = self._read_to
        while len(rows) < limit and position < self._end:
            line = file.readline()
            position += len(line)
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            rows.append(row if isinstance(row, dict) else None)
        self._read_to = position
        return rows

    def unread(self) -> None:
        """Forget rows read since the last :meth:`mark_stored` (they are read again)."""
        self._read_to = self._stored_to

    def mark_stored(self, count: int) -> None:
        """Record that every row read so far (``count`` of them) is stored.

        Persists the position; when nothing is left, cuts the file back to its header.

        Raises:
            OSError: The position could not be persisted (this process still moves past the
                rows; after a restart they would be stored again, the same versions).
        """
        file = self._require()
        self.records -= count
        emptied = self._read_to >= self._end
        if emptied:
            self._stored_to = self._read_to = self._end = _HEADER_SIZE
            self.records = 0
        else:
            self._stored_to = self._read_to
        if emptied:
            file.truncate(_HEADER_SIZE)
        file.seek(0)
        file.write(_HEADER % self._stored_to)
        file.flush()

    def close(self) -> None:
        """Force the file to disk and release it; an empty file is removed."""
        file = self._file
        if file is None:
            return
        self._file = None
        try:
            if not self.backlog:
                self.path.unlink(missing_ok=True)  # still ours: the lock is held until close
            else:
                file.flush()
                os.fsync(file.fileno())
        finally:
            file.close()

    def _require(self) -> BinaryIO:
        if self._file is None:
            raise RuntimeError("the log spill file is not open")
        return self._file


def _fitting_lines(rows: Iterable[dict[str, Any]], room: int) -> tuple[list[bytes], int]:
    """Each row as a JSON line, and how many of them, from the first, fit in ``room`` bytes."""
    lines = [orjson.dumps(row) + b"\n" for row in rows]
    fitting = 0
    for line in lines:
        if len(line) > room:
            break
        room -= len(line)
        fitting += 1
    return lines, fitting
