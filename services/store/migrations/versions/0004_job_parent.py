"""jobs: parent_id, so that a short's clips are jobs of their own that belong to it

Revision ID: 0004_job_parent
Revises: 0003_money_micros
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_job_parent"
down_revision = "0003_money_micros"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_jobs_parent_id", ["parent_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_parent_id")
        batch_op.drop_column("parent_id")
