"""Structured logs: one JSON object per line (`--log-format json`), with the generation id on every
line written while a job runs.

The id travels in a context variable set by `job_context(job_id)`; `JobIdFilter` copies it onto
each record (as `generation_id`), so any logger (ours, the pipeline's) used during the job is
tagged without being passed the id. Threads started for a job (the worker's reporter) enter the
context themselves. Hand-rolled rather than a dependency: a formatter of a dozen lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Iterator

_GENERATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("generation_id", default=None)


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log line written in this context (thread/task) with `generation_id=job_id`."""
    token = _GENERATION_ID.set(job_id)
    try:
        yield
    finally:
        _GENERATION_ID.reset(token)


class JobIdFilter(logging.Filter):
    """Puts the current generation id (or the one passed as `extra`) on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "generation_id", None) is None:
            record.generation_id = _GENERATION_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "pid", "time", "message", "generation_id"?, "exc"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "time": round(record.created, 6),  # unix seconds, for machines (ts is for people)
            "message": record.getMessage(),
        }
        generation_id = getattr(record, "generation_id", None)
        if generation_id:
            entry["generation_id"] = generation_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
