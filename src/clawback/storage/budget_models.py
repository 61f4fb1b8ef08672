"""The budget tables: definitions, emergency overrides, the audit trail and the alerts fired.

They live in the ledger's database (migration ``0004_budgets``) so that one backup holds the spend and the
rules it was held to. Money is integer micro-dollars, as in the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clawback.storage.ledger_models import Base, BigIdType, JsonType, UTCDateTime

__all__ = ["BudgetAlertRow", "BudgetAuditRow", "BudgetOverrideRow", "BudgetRow"]


class BudgetRow(Base):
    __tablename__ = "budgets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    scope: Mapped[str] = mapped_column(String(20), nullable=False)
    scope_value: Mapped[str | None] = mapped_column(String(200))
    limit_micro_usd: Mapped[int | None] = mapped_column(BigInteger)
    limit_tokens: Mapped[int | None] = mapped_column(BigInteger)
    window: Mapped[str] = mapped_column(String(20), nullable=False)
    rolling_s: Mapped[int | None] = mapped_column(BigInteger)
    timezone: Mapped[str | None] = mapped_column(String(64))
    thresholds: Mapped[list[int]] = mapped_column(JsonType, nullable=False, default=list)
    forecast: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    action: Mapped[str] = mapped_column(String(20), nullable=False, default="refuse")
    downgrade_model: Mapped[str | None] = mapped_column(String(100))
    min_max_tokens: Mapped[int | None] = mapped_column(BigInteger)
    on_store_error: Mapped[str] = mapped_column(String(10), nullable=False, default="closed")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class BudgetOverrideRow(Base):
    __tablename__ = "budget_overrides"
    __table_args__ = (Index("ix_budget_overrides_budget_id", "budget_id"),)

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    budget_id: Mapped[str] = mapped_column(String(32), ForeignKey("budgets.id", ondelete="CASCADE"), nullable=False)
    limit_micro_usd: Mapped[int | None] = mapped_column(BigInteger)
    limit_tokens: Mapped[int | None] = mapped_column(BigInteger)
    lifted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BudgetAuditRow(Base):
    """Who did what to a budget, when and why; never updated or deleted (a deleted budget keeps its trail)."""

    __tablename__ = "budget_audit"
    __table_args__ = (Index("ix_budget_audit_budget_id", "budget_id"),)

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    budget_id: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False, default=dict)


class BudgetAlertRow(Base):
    """Every alert raised (the history of a budget's windows)."""

    __tablename__ = "budget_alerts"
    __table_args__ = (Index("ix_budget_alerts_budget_id", "budget_id"),)

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    budget_id: Mapped[str] = mapped_column(String(32), nullable=False)
    scope_value: Mapped[str | None] = mapped_column(String(200))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    threshold: Mapped[int | None] = mapped_column(BigInteger)
    spent_micro_usd: Mapped[int] = mapped_column(BigInteger, nullable=False)
    spent_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
    delivered: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
