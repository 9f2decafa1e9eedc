"""Per-key submission limits: one token bucket per owner (server/queue/limits.py).

Revision ID: 0003_rate_buckets
Revises: 0002_fleet_metrics
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_rate_buckets"
down_revision = "0002_fleet_metrics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
