"""Clawback keys: how clients authenticate to the gateway, and which tenant a request is billed to.

A key is shown once, when it is created; only its SHA-256 is stored (keys are 256-bit random secrets, so a
fast hash is enough: there is nothing to brute-force). Each key carries tenant labels (user, team, feature,
anything else) that every ledger row of its requests inherits. The gateway looks keys up in memory and
reloads the table every ``refresh_s`` seconds, so a key revoked from another process (``clawback keys
revoke``) stops working within that interval, and at once in the process that revoked it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, String, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Mapped, mapped_column

from clawback.storage.engine import make_engine
from clawback.storage.ledger_models import Base, JsonType, UTCDateTime

__all__ = ["ApiKey", "ApiKeyRow", "KeyStore", "KeysUnavailable", "hash_key"]

log = logging.getLogger(__name__)

KEY_PREFIX = "cb-"
MISS_RELOAD_S = 0.25


class KeysUnavailable(Exception):
    """The key table was never read and cannot be now (database down, pool exhausted): no key can be checked."""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    labels: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _to_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(row.id, row.name, {str(k): str(v) for k, v in (row.labels or {}).items()}, row.created_at,
                  row.revoked_at)  # fmt: skip


class KeyStore:
    def __init__(self, url_or_engine: str | Engine, refresh_s: float = 2.0) -> None:
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.refresh_s = refresh_s
        self._by_hash: dict[str, ApiKey] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self.reload_errors = 0
        self._ever_loaded = False

    def create(self, name: str = "", labels: dict[str, str] | None = None) -> tuple[ApiKey, str]:
        """A new key; returns it with its secret, which is never stored and cannot be shown again."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id="key_" + secrets.token_hex(6),
            key_hash=hash_key(secret),
            name=name,
            labels=dict(labels or {}),
            created_at=datetime.now(UTC),
        )
        with self.engine.begin() as conn:
            conn.execute(
                ApiKeyRow.__table__.insert().values(  # type: ignore[attr-defined]
                    id=row.id, key_hash=row.key_hash, name=row.name, labels=row.labels, created_at=row.created_at
                )
            )
        self._loaded_at = float("-inf")
        return _to_key(row), secret

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ApiKeyRow.__table__).order_by(ApiKeyRow.created_at)).mappings().all()
        return [ApiKey(r["id"], r["name"], dict(r["labels"] or {}), r["created_at"], r["revoked_at"]) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        self._loaded_at = float("-inf")
        return bool(result.rowcount)

    def lookup(self, secret: str) -> ApiKey | None:
        """The active key for ``secret``, or None (unknown or revoked)."""
        if time.monotonic() - self._loaded_at > self.refresh_s:
            self._reload(self.refresh_s)
        digest = hash_key(secret)
        key = self._by_hash.get(digest)
        if key is None:
            # A key created a moment ago by another process: look again, but at most every MISS_RELOAD_S, so
            # a client hammering with bad keys cannot turn into a query per request.
            self._reload(MISS_RELOAD_S)
            key = self._by_hash.get(digest)
        return key if key is not None and key.active else None

    def _reload(self, max_age: float) -> None:
        """Reload the table; a database that is down (a restart, a failover) keeps the last table in use.

        Refusing every request because the key table could not be re-read would turn a database restart into
        an outage of the gateway; a revocation made meanwhile takes effect at the first reload that works.
        """
        with self._lock:
            if time.monotonic() - self._loaded_at <= max_age:
                return
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(select(ApiKeyRow.__table__)).mappings().all()
            except (OperationalError, PoolTimeoutError) as exc:
                if not self._ever_loaded:  # nothing to fall back on
                    reason = str(exc).splitlines()[0]
                    raise KeysUnavailable(f"the key table cannot be read from the ledger database: {reason}") from exc
                self.reload_errors += 1
                log.warning("keys: cannot reload the key table (%s); using the one loaded before", exc)
                # Try again after MISS_RELOAD_S, not at once: a dead database must not cost a connect per request.
                self._loaded_at = time.monotonic() - self.refresh_s + MISS_RELOAD_S
                return
            self._by_hash = {
                r["key_hash"]: ApiKey(r["id"], r["name"], dict(r["labels"] or {}), r["created_at"], r["revoked_at"])
                for r in rows
            }
            self._loaded_at = time.monotonic()
            self._ever_loaded = True
