"""Vectors say how they are encoded: ``vectors.dtype`` (float32, float16 or int8).

Every existing row is float32 (the only encoding before this revision), so the
column is added with that as its server default; no row is rewritten.

Revision ID: vector_storage_0001
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "vector_storage_0001"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vectors", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dtype", sa.String(length=8), nullable=False, server_default="float32")
        )


def downgrade() -> None:
    # Rows stored as float16/int8 would be misread as float32 without the column.
    left = op.get_bind().execute(sa.text("SELECT count(*) FROM vectors WHERE dtype != 'float32'"))
    if left.scalar():
        raise RuntimeError(
            "vectors are stored as float16/int8; run `refserver index requantize --to float32` "
            "before downgrading"
        )
    with op.batch_alter_table("vectors", schema=None) as batch_op:
        batch_op.drop_column("dtype")
