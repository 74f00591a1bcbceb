"""Money is exact in the store: costs are whole micro-dollars, sums are exact, and a database that
held costs as decimal strings is migrated without losing a micro-dollar."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from alembic import command
from sqlalchemy import Connection, func, select, text

from connectors.database import get_engine, sessions
from services.ledger import UsageLedger
from services.pricing import PriceTable
from services.store.migrate import alembic_config
from services.store.models import Base, JobRecord, UsageRecord
from services.usage import Usage


def _to(revision: str) -> Callable[[Connection], None]:
    """Alembic to ``revision`` on a connection (run inside ``run_sync``)."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        if revision == "base":
            command.downgrade(config, "base")
        else:
            command.upgrade(config, revision)

    return run


async def test_ten_thousand_tenth_of_a_cent_costs_sum_exactly(database: str) -> None:
    """0.0001 ten thousand times is exactly $1, where a float sum drifts."""
    ledger = UsageLedger(PriceTable(""))
    assert sum([0.0001] * 10_000) != 1.0
    async with sessions().begin() as session:
        session.add_all(
            UsageRecord(user_key="u", chat_key="c", command="write", model="m", cost=Decimal("0.0001"))
            for _ in range(10_000)
        )
    spent = await ledger.spent("user", "u")
    assert spent.today == spent.this_month == Decimal("1.000000")
    async with sessions()() as session:
        assert await session.scalar(select(func.sum(UsageRecord.cost))) == Decimal(1)


async def test_costs_stored_as_strings_are_migrated_to_microdollars(database: str) -> None:
    async with get_engine().begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        await connection.run_sync(_to("0002_job_clock"))
        await connection.execute(
            text(
                "INSERT INTO usage (user_key, chat_key, command, model, prompt_tokens, completion_tokens, "
                "video_seconds, images, cost_usd, created_at) VALUES "
                "('u', 'c', 'video', 'veo', 0, 0, 8, 0, '3.200000', CURRENT_TIMESTAMP), "
                "('u', 'c', 'write', 'm', 10, 10, 0, 0, '0.000123', CURRENT_TIMESTAMP)"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO jobs (id, kind, state, user_key, platform, chat_id, payload, attempts, cost_usd, "
                "created_at, updated_at) VALUES ('j1', 'video', 'delivered', 'u', 'telegram', '1', '{}', 1, '3.20', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        await connection.run_sync(_to("head"))
    async with sessions()() as session:
        costs = sorted(await session.scalars(select(UsageRecord.cost)))
        assert costs == [Decimal("0.000123"), Decimal("3.2")]
        job = await session.get(JobRecord, "j1")
        assert job is not None and job.cost == Decimal("3.20")
    ledger = UsageLedger(PriceTable(""))
    ledger.record(user_key="u", chat_key="c", command="write", model="m", usage=Usage(prompt_tokens=1_000_000))
    assert await ledger.flush() == 1  # the migrated table takes new rows
    assert (await ledger.spent("user", "u")).today == Decimal("3.200123") + Decimal(5)  # fallback: $5 per 1M in


def test_the_head_revision_read_from_the_scripts_is_alembics() -> None:
    """Starting on an up-to-date database skips Alembic by comparing with this revision, so it
    must be exactly what Alembic itself calls head."""
    from alembic.script import ScriptDirectory

    from services.store.migrate import head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_a_database_at_head_is_started_without_importing_alembic(database: str) -> None:
    import asyncio
    import sys
    from pathlib import Path

    probe = (
        "import asyncio, sys\n"
        "from connectors.database import configure_database\n"
        "from services.store.migrate import migrate_to_head\n"
        f"configure_database({database!r})\n"
        "asyncio.run(migrate_to_head())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, cwd=Path(__file__).parents[2], stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0 and out.decode().strip() == "[]"
