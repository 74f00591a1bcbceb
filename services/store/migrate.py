"""Bring the database schema to the newest Alembic revision at start (idempotent, safe to race:
PostgreSQL takes an advisory lock so two processes starting at once do not both migrate)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from connectors.database import get_engine

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK_KEY = 7_312_026


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate_to_head() -> None:
    async with get_engine().begin() as connection:
        await connection.run_sync(_upgrade)
