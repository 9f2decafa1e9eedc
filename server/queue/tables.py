"""The store's schema: tables, job states and event names (SQLAlchemy Core; SQLite or PostgreSQL).

This is the schema at the newest migration (`server/queue/migrations/versions`); a change here
needs a new revision there (see ARCHITECTURE.md, "A schema change").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)

QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED = "queued", "processing", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
# Event-log names: Oxen's completion event, plus extension events clients ignore if unknown.
EVENT_COMPLETED = "media_generation_completed"
EVENT_STARTED = "media_generation_started"
EVENT_PROGRESS = "media_generation_progress"
EVENT_CANCELLED = "media_generation_cancelled"
ACTIVE = (QUEUED, PROCESSING)
MAX_ATTEMPTS = 2  # a job whose worker died is retried once, then failed
KEYFRAME_IMAGES = "keyframe_images"  # params key: sha256s (in job_inputs) of a job's keyframe images, in order

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # FIFO order
    Column("id", String(36), nullable=False, unique=True),
    Column("owner", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("media_type", String(16), nullable=False, default="video"),
    Column("status", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("input_sha256", String(64), nullable=False),
    Column("enqueued_at", Float, nullable=False),
    Column("started_at", Float),
    Column("completed_at", Float),
    Column("progress", Float, nullable=False, default=0.0),
    Column("stage", String(32)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker_id", String(128)),
    Column("lease_expires_at", Float),
    Column("result_path", Text),
    Column("result_deleted_at", Float),
    Column("error_message", Text),
    Column("info", JSON),  # extension facts about the output (seed, size, fps)
    Column("step_seconds", Float),  # mean denoising step time of the run (metrics)
    Column("size_bucket", String(16)),  # resolution bucket of the request (metrics)
    Index("ix_jobs_status_seq", "status", "seq"),
    Index("ix_jobs_owner_status", "owner", "status"),
    Index("ix_jobs_owner_started", "owner", "started_at"),
)

inputs = Table(
    "job_inputs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
)

events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(64), nullable=False),
    Column("job_id", String(36), nullable=False),
    Column("name", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_job_events_created", "created_at"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("device", String(32)),
    Column("pid", Integer),
    Column("ready", Boolean, nullable=False, default=False),
    Column("smoke_test", Boolean, nullable=False, default=False),
    Column("notice", Text),
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("job_id", String(36)),  # the job it runs now (None: idle)
    Column("gpu_memory_allocated", BigInteger),  # bytes, read by the worker (None without a GPU)
    Column("gpu_memory_reserved", BigInteger),
)

# ---- submission limits (issue 11) ----------------------------------------------------------------
# One token bucket per owner (API key), shared by every API process through the store; the row
# is also the lock that makes the per-key active-job cap exact (see server/queue/limits.py).
# Existing databases get it from migrations/versions/0003_rate_buckets.py.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("owner", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
# ---- end of submission limits ---------------------------------------------------------------------


def _sqlite_pragmas(busy_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    return on_connect


def make_engine(url: str, busy_timeout: float = 10.0) -> Engine:
    """An engine for a store URL; SQLite gets WAL, a busy timeout (seconds) and a thread-safe pool."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout})
        event.listen(engine, "connect", _sqlite_pragmas(int(busy_timeout * 1000)))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
