"""The request ledger.

Revision ID: 0001_ledger
Revises:
Create Date: 2025-01-01

Written by hand rather than imported from the models: a migration is a frozen record of the schema at this
revision, and must not change when ``ledger_models.py`` later does.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_ledger"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger",
        sa.Column("id", _big_id, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("user", sa.String(), nullable=True),
        sa.Column("team", sa.String(), nullable=True),
        sa.Column("feature", sa.String(), nullable=True),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("agent_id", sa.String(), nullable=True),
        sa.Column("labels", _json, nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("endpoint", sa.String(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.String(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_5m_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_1h_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("counterfactual_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("savings_micro_usd", _json, nullable=False),
        sa.Column("cache_status", sa.String(), nullable=True),
        sa.Column("upstream_request_id", sa.String(), nullable=True),
        sa.Column("batch", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
        sa.UniqueConstraint("request_id", name="uq_ledger_request_id"),
    )
    op.create_index("ix_ledger_started_at", "ledger", ["started_at"])
    op.create_index("ix_ledger_key_id", "ledger", ["key_id"])
    op.create_index("ix_ledger_model", "ledger", ["model"])


def downgrade() -> None:
    op.drop_index("ix_ledger_model", table_name="ledger")
    op.drop_index("ix_ledger_key_id", table_name="ledger")
    op.drop_index("ix_ledger_started_at", table_name="ledger")
    op.drop_table("ledger")
