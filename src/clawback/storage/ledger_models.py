"""The ``ledger`` table: one row per request that went through clawback.

Money is stored as integer micro-dollars (BigInteger) so that sums are exact in every database and no
float ever touches a cost. Timestamps are stored as UTC and always read back timezone-aware, including on
SQLite, which has no timezone type. The migration in ``migrations/versions/0001_ledger.py`` creates the same
table; this model is the source for queries and for ``alembic revision --autogenerate``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Dialect, Float, Index, Integer, MetaData, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["NAMING_CONVENTION", "Base", "BigIdType", "JsonType", "LedgerRow", "UTCDateTime"]

#: Deterministic constraint names, so that migrations can later drop or alter them by name on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON everywhere, JSONB on PostgreSQL (indexable, compact).
JsonType = JSON().with_variant(postgresql.JSONB(), "postgresql")

#: A surrogate key that autoincrements on both backends (SQLite only autoincrements INTEGER PRIMARY KEY).
BigIdType = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware in, timezone-aware (UTC) out; naive datetimes are refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: ledger timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite may hand back the stored text for raw reads
            value = datetime.fromisoformat(value)
        stamp: datetime = value
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base for clawback's relational storage."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class LedgerRow(Base):
    """One request. Column names match ``LedgerRecord`` field names one to one."""

    __tablename__ = "ledger"
    # Only the time index: every report reads a time range. Indexes on key_id and model (dropped in
    # migration 0003) were read by no query and made each insert dearer (docs/performance.md).
    __table_args__ = (Index("ix_ledger_started_at", "started_at"),)

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String, nullable=False, unique=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    key_id: Mapped[str | None] = mapped_column(String)
    user: Mapped[str | None] = mapped_column(String)
    team: Mapped[str | None] = mapped_column(String)
    feature: Mapped[str | None] = mapped_column(String)
    session_id: Mapped[str | None] = mapped_column(String)
    agent_id: Mapped[str | None] = mapped_column(String)
    labels: Mapped[dict[str, str]] = mapped_column(JsonType, nullable=False, default=dict)
    model: Mapped[str] = mapped_column(String, nullable=False)
    endpoint: Mapped[str] = mapped_column(String, nullable=False)
    stream: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    error_type: Mapped[str | None] = mapped_column(String)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cache_read_input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cache_write_5m_input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cache_write_1h_input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cost_micro_usd: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    counterfactual_micro_usd: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    savings_micro_usd: Mapped[dict[str, int]] = mapped_column(JsonType, nullable=False, default=dict)
    shadow_savings_micro_usd: Mapped[dict[str, int]] = mapped_column(JsonType, nullable=False, default=dict)
    cache_status: Mapped[str | None] = mapped_column(String)
    upstream_request_id: Mapped[str | None] = mapped_column(String)
    batch: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    budget_status: Mapped[str | None] = mapped_column(String)
