"""Baseline: the schema `metadata.create_all` made before migrations existed (commit 5704dff).

A database created by that code has these tables but no `alembic_version`; `migrate` stamps it
at this revision and upgrades from here. Frozen: never edit, add a revision instead.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("media_type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("enqueued_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("completed_at", sa.Float),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("stage", sa.String(32)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("result_path", sa.Text),
        sa.Column("result_deleted_at", sa.Float),
        sa.Column("error_message", sa.Text),
        sa.Column("info", sa.JSON),
    )
    op.create_index("ix_jobs_status_seq", "jobs", ["status", "seq"])
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])
    op.create_index("ix_jobs_owner_started", "jobs", ["owner", "started_at"])
    op.create_table(
        "job_inputs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_job_events_created", "job_events", ["created_at"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("device", sa.String(32)),
        sa.Column("pid", sa.Integer),
        sa.Column("ready", sa.Boolean, nullable=False),
        sa.Column("smoke_test", sa.Boolean, nullable=False),
        sa.Column("notice", sa.Text),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("workers", "job_events", "job_inputs", "jobs"):
        op.drop_table(table)
