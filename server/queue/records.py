"""What the store hands out: job rows, event rows, and what `enqueue` takes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    """A job row as the rest of the server sees it."""

    id: str
    owner: str
    model: str
    media_type: str
    status: str
    params: dict[str, Any]
    input_sha256: str
    enqueued_at: float
    started_at: float | None
    completed_at: float | None
    progress: float
    stage: str | None
    attempts: int
    worker_id: str | None
    lease_expires_at: float | None
    result_path: str | None
    result_deleted_at: float | None
    error_message: str | None
    info: dict[str, Any] | None
    seq: int = 0
    step_seconds: float | None = None  # mean denoising step time (metrics)
    size_bucket: str | None = None  # resolution bucket (metrics)


@dataclass(frozen=True)
class JobEvent:
    """One row of the event log."""

    id: int
    owner: str
    job_id: str
    name: str
    payload: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class NewJob:
    """What `enqueue` needs for one job."""

    owner: str
    model: str
    params: dict[str, Any]
    input_sha256: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


def _job(row: Any) -> Job:
    data = dict(row._mapping)
    return Job(**data)
