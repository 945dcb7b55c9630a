"""Alembic per service: its own schema, its own version table, its own history.

All services share one ``env.py`` (``services/kit/alembic_env``); each keeps its
revisions in ``services/<service>/migrations/versions``. Revision files are named
by date and slug.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

from services.kit.settings import asyncpg_url

ENV_DIR = Path(__file__).parent / "alembic_env"
SERVICES_DIR = Path(__file__).resolve().parent.parent


def versions_dir(service: str) -> Path:
    return SERVICES_DIR / service / "migrations" / "versions"


def service_metadata_of(service: str) -> MetaData:
    module = importlib.import_module(f"services.{service}.repository")
    metadata: MetaData = module.metadata
    return metadata


def alembic_config(service: str, database_url: str, schema: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ENV_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(versions_dir(service)))
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(slug)s")
    config.set_main_option("sqlalchemy.url", asyncpg_url(database_url).replace("%", "%%"))
    config.attributes["schema"] = schema or service
    config.attributes["target_metadata"] = service_metadata_of(service)
    return config


def upgrade(
    service: str, database_url: str, revision: str = "head", schema: str | None = None
) -> None:
    command.upgrade(alembic_config(service, database_url, schema), revision)


def downgrade(service: str, database_url: str, revision: str, schema: str | None = None) -> None:
    command.downgrade(alembic_config(service, database_url, schema), revision)


async def upgrade_async(
    service: str, database_url: str, revision: str = "head", schema: str | None = None
) -> None:
    """For callers already inside an event loop: env.py runs its own loop in a thread."""
    await asyncio.to_thread(upgrade, service, database_url, revision, schema)


def migration_schema() -> str:
    """The schema being migrated (``DB_SCHEMA`` may rename a service's schema)."""
    from alembic import context

    schema: str = context.config.attributes["schema"]
    return schema


def kit_tables_v1_upgrade() -> None:
    """Create the outbox, inbox and request-id tables, as of kit schema version 1.

    Called from each service's first revision. A later change to these tables
    gets a ``kit_tables_v2_upgrade`` and a new revision in every service, so
    old revisions keep meaning what they meant.
    """
    from alembic import op
    from sqlalchemy import MetaData as _MetaData

    from services.kit.tables import inbox_table, outbox_table, request_table

    metadata = _MetaData(schema=migration_schema())
    bind = op.get_bind()
    outbox_table(metadata).create(bind)
    inbox_table(metadata).create(bind)
    request_table(metadata).create(bind)


def kit_tables_v1_downgrade() -> None:
    from alembic import op

    op.drop_table("idempotent_request", schema=migration_schema())
    op.drop_table("inbox_message", schema=migration_schema())
    op.drop_table("outbox_event", schema=migration_schema())


def kit_audit_v1_upgrade() -> None:
    """Create the audit trail table (kit audit version 1), in each service's own revision."""
    from alembic import op

    from services.kit.db import make_metadata
    from services.kit.tables import audit_table

    # With the naming convention, so the primary key's name is the one the
    # service's metadata expects.
    audit_table(make_metadata(migration_schema())).create(op.get_bind())


def kit_audit_v1_downgrade() -> None:
    from alembic import op

    op.drop_table("audit_entry", schema=migration_schema())
