"""Schema migrations, run from code: ``migrate(url)`` brings a database to the newest revision.

The Alembic scripts ship inside the package (``clawback/storage/migrations``), so an installed wheel can
migrate without an ``alembic.ini`` or a source checkout, and the gateway can migrate at start-up.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from clawback.storage.engine import make_engine

__all__ = ["current_revision", "head_revision", "migrate", "migrate_engine"]

VERSION_TABLE = "clawback_alembic_version"
# Any constant works; it only has to be the same for every replica migrating the same database.
_PG_MIGRATION_LOCK = 0x636C6177  # "claw"


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("clawback.storage") / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate_engine(engine: Engine, revision: str = "head") -> None:
    """Upgrade through ``engine`` in one transaction.

    On PostgreSQL a transaction-scoped advisory lock serialises replicas that start at the same moment, so
    two gateways booting together do not both try to create the same table. Its DDL is transactional, so a
    failed migration leaves nothing half-done.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        command.upgrade(_config(connection), revision)


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema revision (idempotent)."""
    engine = make_engine(url)
    try:
        migrate_engine(engine)
    finally:
        engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database (for health checks)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def head_revision() -> str | None:
    """The newest revision this version of clawback ships."""
    return ScriptDirectory.from_config(_config()).get_current_head()
