"""The flag store: each optimization's mode and rollout, and the audit of every change, in the ledger's database.

Why the ledger's database: every replica already reaches it (SQLite for one process, PostgreSQL for several),
so flags need no new service. Each replica keeps the flags in memory (``FlagStore.current``, swapped whole, so a
request reads one consistent snapshot without a lock or a query) and reloads them on a watcher thread: when a
change is announced on Redis pub/sub (``flags.redis_url``), at once, and in any case every ``flags.refresh_s``
seconds, so a replica that missed a message (Redis down, not configured) is at most that late. A thread, not an
asyncio task, because the in-process wrapper's synchronous client has no event loop to run one on.

Every change is a row of ``flag_changes``: who (``actor``), when, why, and what the flag was before, so an
operator can see and undo what happened. Several flags changed together (``clawback rollback all``) are written
in one transaction and announced once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast, get_args

from sqlalchemy import Engine, Float, String, Table, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from clawback.config import FlagMode
from clawback.storage.engine import make_engine
from clawback.storage.ledger_models import Base, BigIdType, UTCDateTime

__all__ = ["MODES", "FlagChange", "FlagChangeRow", "FlagRow", "FlagState", "FlagStore", "FlagUpdate", "check_update"]

log = logging.getLogger("clawback.flags")

MODES: tuple[FlagMode, ...] = get_args(FlagMode)
_WAKE_S = 0.25  # the watcher looks at its stop event at least this often


class FlagRow(Base):
    __tablename__ = "flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(8), nullable=False)
    rollout: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(200), nullable=False)
    reason: Mapped[str] = mapped_column(String(1000), nullable=False, default="")


class FlagChangeRow(Base):
    __tablename__ = "flag_changes"

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    mode: Mapped[str] = mapped_column(String(8), nullable=False)
    rollout: Mapped[float] = mapped_column(Float, nullable=False)
    previous_mode: Mapped[str | None] = mapped_column(String(8))
    previous_rollout: Mapped[float | None] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    reason: Mapped[str] = mapped_column(String(1000), nullable=False, default="")


_flags = cast(Table, FlagRow.__table__)
_changes = cast(Table, FlagChangeRow.__table__)


@dataclass(frozen=True, slots=True)
class FlagState:
    """One stored flag: ``mode`` for ``rollout`` percent of the buckets, ``off`` for the rest."""

    name: str
    mode: FlagMode
    rollout: float
    updated_at: datetime | None = None
    updated_by: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "rollout": self.rollout,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None,
                "updated_by": self.updated_by, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    name: str
    mode: FlagMode
    rollout: float = 100.0


@dataclass(frozen=True, slots=True)
class FlagChange:
    """One audited change."""

    at: datetime
    name: str
    mode: FlagMode
    rollout: float
    previous_mode: FlagMode | None
    previous_rollout: float | None
    actor: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "name": self.name, "mode": self.mode, "rollout": self.rollout,
                "previous_mode": self.previous_mode, "previous_rollout": self.previous_rollout,
                "actor": self.actor, "reason": self.reason}  # fmt: skip

    def describe(self) -> str:
        before = "unset" if self.previous_mode is None else f"{self.previous_mode} {self.previous_rollout:g}%"
        return f"{self.name}: {before} -> {self.mode} {self.rollout:g}%"


def check_update(update: FlagUpdate) -> None:
    """Refuse what no request could be decided by (``ValueError`` with the reason)."""
    if update.mode not in MODES:
        raise ValueError(f"flag {update.name}: mode must be one of {', '.join(MODES)}, got {update.mode!r}")
    if not 0 <= update.rollout <= 100:
        raise ValueError(f"flag {update.name}: rollout is a percentage (0-100), got {update.rollout:g}")
    if not update.name or len(update.name) > 64:
        raise ValueError("a flag's name is 1-64 characters (a stage's name: pruning, exact_cache, ...)")


def _state(r: Any) -> FlagState:
    return FlagState(r["name"], r["mode"], float(r["rollout"]), r["updated_at"], r["updated_by"], r["reason"])


def _change(r: Any) -> FlagChange:
    previous = None if r["previous_rollout"] is None else float(r["previous_rollout"])
    return FlagChange(r["at"], r["name"], r["mode"], float(r["rollout"]), r["previous_mode"], previous, r["actor"],
                      r["reason"])  # fmt: skip


class FlagStore:
    """The flags in memory (``current``), kept fresh from the database; writes are audited."""

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        refresh_s: float = 1.0,
        redis_url: str | None = None,
        channel: str = "clawback:flags",
    ) -> None:
        # An engine handed in is the process's pool (its connections already counted against max_connections):
        # borrowed, so closing the store leaves it to its owner.
        self._owns_engine = isinstance(url_or_engine, str)
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.refresh_s = refresh_s
        self.redis_url = redis_url
        self.channel = channel
        self.current: dict[str, FlagState] = {}
        self.reloads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher: Any = None

    # -- reading
    def reload(self) -> dict[str, FlagState]:
        """Read every flag from the database and make it the current snapshot."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_flags)).mappings().all()
        self.current = {r["name"]: _state(r) for r in rows}
        self.reloads += 1
        return self.current

    def history(self, name: str | None = None, limit: int = 50) -> list[FlagChange]:
        """The newest ``limit`` changes (of flag ``name``), oldest first."""
        stmt = select(_changes).order_by(_changes.c.id.desc()).limit(limit)
        if name is not None:
            stmt = stmt.where(_changes.c.name == name)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [_change(r) for r in reversed(rows)]

    # -- writing
    def apply(self, updates: Sequence[FlagUpdate], *, actor: str, reason: str = "") -> list[FlagChange]:
        """Set every flag of ``updates`` in one transaction, audited; announce the change to the other replicas.

        An update that changes nothing (same mode and rollout) is not written and not returned."""
        for item in updates:
            check_update(item)
        now = datetime.now(UTC)
        changes: list[FlagChange] = []
        with self.engine.begin() as conn:
            existing = {r["name"]: r for r in conn.execute(select(_flags)).mappings().all()}
            for item in updates:
                before = existing.get(item.name)
                if before is not None and before["mode"] == item.mode and float(before["rollout"]) == item.rollout:
                    continue
                values = {"mode": item.mode, "rollout": item.rollout, "updated_at": now, "updated_by": actor,
                          "reason": reason}  # fmt: skip
                if before is None:
                    conn.execute(insert(_flags).values(name=item.name, **values))
                else:
                    conn.execute(update(_flags).where(_flags.c.name == item.name).values(**values))
                change = FlagChange(
                    now, item.name, item.mode, item.rollout, None if before is None else before["mode"],
                    None if before is None else float(before["rollout"]), actor, reason,
                )  # fmt: skip
                conn.execute(insert(_changes).values(
                    at=now, name=item.name, mode=item.mode, rollout=item.rollout, previous_mode=change.previous_mode,
                    previous_rollout=change.previous_rollout, actor=actor, reason=reason,
                ))  # fmt: skip
                changes.append(change)
        self.reload()
        if changes:
            self.announce()
        return changes

    def rollback(self, names: Iterable[str], *, actor: str, reason: str = "") -> list[FlagChange]:
        """Turn every flag of ``names`` off (its rollout kept, for ``flags set NAME on`` to bring back), audited, in
        one transaction; the changes made (a flag already off is not changed)."""
        current = self.reload()
        updates = [FlagUpdate(n, "off", current[n].rollout if n in current else 100.0) for n in dict.fromkeys(names)]
        return self.apply(updates, actor=actor, reason=reason or "rollback")

    def announce(self) -> None:
        """Tell the replicas listening on Redis to reload now (best effort: the periodic refresh is the floor)."""
        if self.redis_url is None:
            return
        try:
            if self._publisher is None:
                import redis

                self._publisher = redis.Redis.from_url(self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._publisher.publish(self.channel, b"reload")
        except Exception as exc:  # redis down: the others find the change at their next refresh
            log.warning("flags: could not announce a change on Redis (%s); replicas reload within %.0f s", exc,
                        self.refresh_s)  # fmt: skip
            self._publisher = None

    # -- watching
    def start(self) -> None:
        """Load the flags and start the watcher thread (idempotent)."""
        if self._thread is not None:
            return
        self.reload()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="clawback-flags", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        pubsub = None
        due = time.monotonic() + self.refresh_s
        while not self._stop.is_set():
            announced = False
            wait = max(0.0, min(_WAKE_S, due - time.monotonic()))  # short waits: close() is never kept waiting
            try:
                if self.redis_url is not None and pubsub is None:
                    pubsub = self._subscribe()
                if pubsub is not None:
                    announced = pubsub.get_message(ignore_subscribe_messages=True, timeout=wait) is not None
                    while pubsub.get_message(ignore_subscribe_messages=True, timeout=0) is not None:
                        pass  # several announcements: one reload
                else:
                    self._stop.wait(wait)
            except Exception as exc:
                log.warning("flags: Redis subscription lost (%s); reloading every %.0f s", exc, self.refresh_s)
                pubsub = None
                self._stop.wait(min(self.refresh_s, _WAKE_S * 4))
            if self._stop.is_set() or not (announced or time.monotonic() >= due):
                continue
            due = time.monotonic() + self.refresh_s
            try:
                self.reload()
            except Exception as exc:  # the database is down: keep the last flags, try again
                log.warning("flags: could not reload (%s); keeping the last flags", exc)
        if pubsub is not None:
            pubsub.close()

    def _subscribe(self) -> Any:
        import redis

        assert self.redis_url is not None
        client = redis.Redis.from_url(self.redis_url, socket_timeout=None, socket_connect_timeout=1.0)
        pubsub = client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]  # untyped before redis 8.2
        pubsub.subscribe(self.channel)
        self.reload()  # a change made while we were not subscribed
        return pubsub

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_WAKE_S * 4 + 2)
            self._thread = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._owns_engine:
            self.engine.dispose()
