"""The job store (storage only): `from server.queue import JobStore, NewJob, Job, ...`."""

from server.queue.jobs import WouldWait
from server.queue.limits import LimitExceeded, SubmitLimits
from server.queue.records import Job, JobEvent, NewJob
from server.queue.store import JobStore
from server.queue.tables import (
    ACTIVE,
    CANCELLED,
    EVENT_CANCELLED,
    EVENT_COMPLETED,
    EVENT_PROGRESS,
    EVENT_STARTED,
    FAILED,
    KEYFRAME_IMAGES,
    MAX_ATTEMPTS,
    PROCESSING,
    QUEUED,
    STATUSES,
    SUCCEEDED,
    TERMINAL,
)

__all__ = [
    "ACTIVE", "CANCELLED", "EVENT_CANCELLED", "EVENT_COMPLETED", "EVENT_PROGRESS", "EVENT_STARTED", "FAILED",
    "KEYFRAME_IMAGES",
    "MAX_ATTEMPTS", "PROCESSING", "QUEUED", "STATUSES", "SUCCEEDED", "TERMINAL", "Job", "JobEvent", "JobStore",
    "NewJob", "LimitExceeded", "SubmitLimits", "WouldWait",
]
