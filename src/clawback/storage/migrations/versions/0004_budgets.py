"""Budgets: definitions, overrides, audit, alerts; the ledger records what the budget stage decided.

Revision ID: 0004_budgets
Revises: 0003_ledger_write_indexes
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_budgets"
down_revision: str | Sequence[str] | None = "0003_ledger_write_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("scope_value", sa.String(200), nullable=True),
        sa.Column("limit_micro_usd", sa.BigInteger(), nullable=True),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        sa.Column("window", sa.String(20), nullable=False),
        sa.Column("rolling_s", sa.BigInteger(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("thresholds", _json, nullable=False),
        sa.Column("forecast", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("downgrade_model", sa.String(100), nullable=True),
        sa.Column("min_max_tokens", sa.BigInteger(), nullable=True),
        sa.Column("on_store_error", sa.String(10), nullable=False),
        sa.Column("created_at", _stamp, nullable=False),
        sa.Column("updated_at", _stamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budgets"),
        sa.UniqueConstraint("name", name="uq_budgets_name"),
    )
    op.create_table(
        "budget_overrides",
        sa.Column("id", _big_id, primary_key=True, autoincrement=True),
        sa.Column("budget_id", sa.String(32), nullable=False),
        sa.Column("limit_micro_usd", sa.BigInteger(), nullable=True),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        sa.Column("lifted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created_at", _stamp, nullable=False),
        sa.Column("expires_at", _stamp, nullable=False),
        sa.Column("revoked_at", _stamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_budget_overrides"),
        sa.ForeignKeyConstraint(
            ["budget_id"], ["budgets.id"], name="fk_budget_overrides_budget_id_budgets", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_budget_overrides_budget_id", "budget_overrides", ["budget_id"])
    op.create_table(
        "budget_audit",
        sa.Column("id", _big_id, primary_key=True, autoincrement=True),
        sa.Column("at", _stamp, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("budget_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", _json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budget_audit"),
    )
    op.create_index("ix_budget_audit_budget_id", "budget_audit", ["budget_id"])
    op.create_table(
        "budget_alerts",
        sa.Column("id", _big_id, primary_key=True, autoincrement=True),
        sa.Column("at", _stamp, nullable=False),
        sa.Column("budget_id", sa.String(32), nullable=False),
        sa.Column("scope_value", sa.String(200), nullable=True),
        sa.Column("window_start", _stamp, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=True),
        sa.Column("spent_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("spent_tokens", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budget_alerts"),
    )
    op.create_index("ix_budget_alerts_budget_id", "budget_alerts", ["budget_id"])
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("budget_status", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("budget_status")
    op.drop_index("ix_budget_alerts_budget_id", table_name="budget_alerts")
    op.drop_table("budget_alerts")
    op.drop_index("ix_budget_audit_budget_id", table_name="budget_audit")
    op.drop_table("budget_audit")
    op.drop_index("ix_budget_overrides_budget_id", table_name="budget_overrides")
    op.drop_table("budget_overrides")
    op.drop_table("budgets")
