"""The ledger's spill file: JSON lines on local disk for records the database could not take (yet).

Two writers append (callers spilling when the queue is full, the ledger thread when the database is down);
only the ledger thread replays. Replay first renames the journal to ``<path>.replay`` under the lock, so
appends made during a replay go to a fresh file and are never truncated away; the replay file is deleted
only once every line in it is in the database. Inserts are idempotent by ``request_id``, so replaying a file
twice after a crash is harmless. Lines that cannot be parsed (a torn last line after a power cut) are moved
to ``<path>.bad`` for a human, never dropped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = ["Journal", "claim_journal_slot"]

log = logging.getLogger(__name__)

#: Lock files this process holds for its journal slots (held until the process exits).
_held_slots: list[IO[bytes]] = []


def claim_journal_slot(path: str | os.PathLike[str], slots: int = 256) -> Path:
    """A journal path no other live process uses: ``path`` itself, else ``path.1``, ``path.2``...

    Several worker processes of one ``clawback serve --workers N`` share one configuration, hence one
    ``ledger.journal_path``; a journal has one replaying writer, so each worker takes a slot of its own, held
    by an exclusive ``flock`` on ``<slot>.lock`` for the life of the process. A worker that dies releases its
    slot, and the worker started in its place takes it and replays what the dead one journaled.
    """
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(slots):
        candidate = base if n == 0 else base.with_name(f"{base.name}.{n}")
        lock = candidate.with_name(candidate.name + ".lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held_slots.append(lock)
        return candidate
    raise RuntimeError(f"ledger journal: all {slots} slots of {base} are held by live processes")


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class Journal:
    """Append-only JSONL spill file with crash-safe, idempotent replay."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.replay_path = self.path.with_name(self.path.name + ".replay")
        self.bad_path = self.path.with_name(self.path.name + ".bad")
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        self._dirty = False
        # Lines of the replay file already in the database; survives failed replay attempts in this process.
        self._replay_done = 0
        self.pending = self._count_lines(self.path) + self._count_lines(self.replay_path)

    @staticmethod
    def _count_lines(path: Path) -> int:
        try:
            with path.open("rb") as fh:
                return sum(1 for line in fh if line.strip())
        except FileNotFoundError:
            return 0

    def append(self, items: Iterable[dict[str, Any]]) -> int:
        """Append records; flushed to the OS at once (survives a process crash), fsynced by ``sync``."""
        data = b"".join(orjson.dumps(item) + b"\n" for item in items)
        if not data:
            return 0
        count = data.count(b"\n")
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("ab")
                if self._fh.tell() > 0 and not _ends_with_newline(self.path):
                    self._fh.write(b"\n")  # a torn last line must not swallow the next record
            self._fh.write(data)
            self._fh.flush()
            self._dirty = True
            self.pending += count
        return count

    def append_bad(self, items: Iterable[dict[str, Any]]) -> int:
        """Keep records the database refused as invalid, for a human to inspect; never silently dropped."""
        data = b"".join(orjson.dumps(item, default=repr) + b"\n" for item in items)
        with self._lock:
            self.bad_path.parent.mkdir(parents=True, exist_ok=True)
            with self.bad_path.open("ab") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        return data.count(b"\n")

    def sync(self) -> None:
        """fsync appended lines (called by the ledger thread, off the request path)."""
        with self._lock:
            if self._fh is not None and self._dirty:
                os.fsync(self._fh.fileno())
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            self._dirty = False

    def has_pending(self) -> bool:
        return self.pending > 0

    def _chunks(self, size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(lines consumed, parsed records) per chunk of the replay file, skipping lines already replayed."""
        bad: list[bytes] = []
        with self.replay_path.open("rb") as fh:
            lines = [line for line in fh if line.strip()]
        lines = lines[self._replay_done :]
        for start in range(0, len(lines), size):
            chunk = lines[start : start + size]
            parsed: list[dict[str, Any]] = []
            for line in chunk:
                try:
                    item = orjson.loads(line)
                    if not isinstance(item, dict):
                        raise ValueError("not an object")
                    parsed.append(item)
                except ValueError:
                    bad.append(line if line.endswith(b"\n") else line + b"\n")
            if bad:
                with self.bad_path.open("ab") as out:
                    out.writelines(bad)
                log.error("ledger journal: %d unreadable line(s) moved to %s", len(bad), self.bad_path)
                bad = []
            yield len(chunk), parsed

    def replay(self, write: Callable[[list[dict[str, Any]]], None], chunk_size: int) -> int:
        """Feed journaled records to ``write`` chunk by chunk; return how many records were replayed.

        ``write`` raising stops the replay; what was written stays recorded, the rest is retried later.
        """
        with self._lock:
            if not self.replay_path.exists():
                self._replay_done = 0
                if not self.path.exists():
                    self.pending = 0
                    return 0
                self._close_locked()
                os.replace(self.path, self.replay_path)
            # Recount from the files: lines written by another process or torn by a crash count too.
            self.pending = self._count_lines(self.replay_path) - self._replay_done + self._count_lines(self.path)
        replayed = 0
        for consumed, records in self._chunks(chunk_size):
            if records:
                write(records)
            replayed += len(records)
            self._replay_done += consumed
            with self._lock:
                self.pending -= consumed
        self.replay_path.unlink()
        self._replay_done = 0
        with self._lock:
            self.pending = self._count_lines(self.path)
        # Appends made during the replay are in a fresh journal file: the next call picks them up.
        return replayed
