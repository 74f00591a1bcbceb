"""Bring the database schema to the newest Alembic revision at start (idempotent, safe to race:
PostgreSQL takes an advisory lock so two processes starting at once do not both migrate).

A database already at the newest revision, the usual start, is recognised without importing
Alembic (about 10 MB a process would keep for nothing): the newest revision is read from the
migration scripts themselves and compared with the database's ``alembic_version``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from connectors.database import get_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK_KEY = 7_312_026
_ASSIGNMENT = re.compile(r'^(revision|down_revision)\s*=\s*"([^"]+)"', re.MULTILINE)


@cache
def head_revision() -> str:
    """The revision no other script names as its ``down_revision``: what ``alembic upgrade head`` reaches."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        found = dict(_ASSIGNMENT.findall(script.read_text(encoding="utf-8")))
        revisions.add(found["revision"])
        if "down_revision" in found:
            parents.add(found["down_revision"])
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _at_head(connection: Connection) -> bool:
    if not inspect(connection).has_table("alembic_version"):
        return False
    versions = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    return versions == [head_revision()]


def _upgrade(connection: Connection) -> None:
    if _at_head(connection):
        return
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate_to_head() -> None:
    async with get_engine().begin() as connection:
        await connection.run_sync(_upgrade)
