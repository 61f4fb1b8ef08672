"""Flags (issue 14): the ``flags`` and ``flag_changes`` tables, and the ledger's shadow savings.

``flags`` holds each optimization's mode and rollout, ``flag_changes`` the audit of every change (who, when,
why, what it was before). ``ledger.shadow_savings_micro_usd`` is what stages in shadow mode would have saved
on a request: kept apart from ``savings_micro_usd`` so that the counterfactual stays what was really saved.

Revision ID: 0005_flags
Revises: 0004_budgets
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_flags"
down_revision: str | Sequence[str] | None = "0004_budgets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "flags",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("rollout", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("name", name="pk_flags"),
    )
    op.create_table(
        "flag_changes",
        sa.Column("id", _id, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("rollout", sa.Float(), nullable=False),
        sa.Column("previous_mode", sa.String(8), nullable=True),
        sa.Column("previous_rollout", sa.Float(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_flag_changes"),
    )
    op.create_index("ix_flag_changes_at", "flag_changes", ["at"])
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("shadow_savings_micro_usd", _json, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("shadow_savings_micro_usd")
    op.drop_index("ix_flag_changes_at", table_name="flag_changes")
    op.drop_table("flag_changes")
    op.drop_table("flags")
