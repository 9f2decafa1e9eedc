"""Fleet metrics: per-job step time and size bucket; per-worker current job and GPU memory.

Revision ID: 0002_fleet_metrics
Revises: 0001_baseline
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_fleet_metrics"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("step_seconds", sa.Float))  # mean denoising step time of the run
    op.add_column("jobs", sa.Column("size_bucket", sa.String(16)))  # resolution bucket of the request
    op.add_column("workers", sa.Column("job_id", sa.String(36)))  # the job it runs now (None: idle)
    op.add_column("workers", sa.Column("gpu_memory_allocated", sa.BigInteger))
    op.add_column("workers", sa.Column("gpu_memory_reserved", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("gpu_memory_reserved")
        batch.drop_column("gpu_memory_allocated")
        batch.drop_column("job_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("size_bucket")
        batch.drop_column("step_seconds")
