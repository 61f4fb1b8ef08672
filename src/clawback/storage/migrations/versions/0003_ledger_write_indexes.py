"""Drop the ledger's key_id and model indexes.

Every ledger query selects a time range (``ix_ledger_started_at``) or one request id (the unique
constraint); none used the two low-cardinality indexes, while each insert paid for them: 24 -> 16 us of
writer CPU a record on SQLite, measured with 20,000 records in batches of 200. The writer's CPU competes
with the gateway's event loop on small machines.

Revision ID: 0003_ledger_write_indexes
Revises: 0002_api_keys
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_ledger_write_indexes"
down_revision: str | Sequence[str] | None = "0002_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_ledger_key_id", table_name="ledger")
    op.drop_index("ix_ledger_model", table_name="ledger")


def downgrade() -> None:
    op.create_index("ix_ledger_key_id", "ledger", ["key_id"])
    op.create_index("ix_ledger_model", "ledger", ["model"])
