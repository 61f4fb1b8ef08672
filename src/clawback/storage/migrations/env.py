"""Alembic environment for clawback's storage, run programmatically by ``clawback.storage.migrate``.

``migrate`` hands over an open connection in ``config.attributes["connection"]`` so that the caller's engine
settings (SQLite WAL pragmas, the PostgreSQL advisory lock taken in the same transaction) apply. Run from the
``alembic`` command line instead, it connects to ``sqlalchemy.url`` from the ini file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from clawback.storage.ledger_models import Base
from clawback.storage.rollup_models import usage_table  # noqa: F401  (the rollup tables join Base.metadata)

VERSION_TABLE = "clawback_alembic_version"

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode rebuilds the table so later migrations work there too.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
