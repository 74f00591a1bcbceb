"""characters: image_path and image_mime, so a character's image can start its clips and thumbnails

Revision ID: 0005_character_image
Revises: 0004_job_parent
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_character_image"
down_revision = "0004_job_parent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_path", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("image_mime", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_characters_image_path", ["image_path"])


def downgrade() -> None:
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.drop_index("ix_characters_image_path")
        batch_op.drop_column("image_mime")
        batch_op.drop_column("image_path")
