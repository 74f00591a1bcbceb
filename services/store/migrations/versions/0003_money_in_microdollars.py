"""jobs and usage: cost as whole micro-dollars (BIGINT) instead of a decimal string

Revision ID: 0003_money_micros
Revises: 0002_job_clock
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_money_micros"
down_revision = "0002_job_clock"
branch_labels = None
depends_on = None

TABLES = ("jobs", "usage")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("cost_micros", sa.BigInteger(), nullable=True))
        op.execute(
            f"UPDATE {table} SET cost_micros = CAST(ROUND(CAST(cost_usd AS NUMERIC) * 1000000) AS BIGINT) "
            "WHERE cost_usd IS NOT NULL"
        )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("cost_usd")
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.alter_column("cost_micros", existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("cost_usd", sa.String(length=20), nullable=True))
        op.execute(f"UPDATE {table} SET cost_usd = CAST(cost_micros / 1000000.0 AS VARCHAR(20))")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("cost_micros")
