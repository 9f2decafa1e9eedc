"""Fleet-wide job statistics for `/metrics`, computed from the job rows at scrape time.

Every API node reads the same rows, so every node reports the same fleet-wide histograms (scrape
any one; in PromQL use `max by (le)` across nodes rather than `sum`). Job records are never
deleted (retention deletes results, not rows), so the cumulative bucket counts only grow, as
Prometheus histograms must. One aggregate query per histogram: a `CASE` per bucket, portable
across SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, select

from server.queue.tables import PROCESSING, TERMINAL, jobs


@dataclass(frozen=True)
class HistogramRows:
    """One label value's cumulative bucket counts (same order as the bounds), count and sum."""

    label: str
    buckets: list[int]
    count: int
    total: float


def _measure(kind: str) -> tuple[Any, Any, tuple]:
    """(value expression, label expression, row conditions) of a histogram kind."""
    if kind == "queue_wait":  # every job that started (a retried job counts its latest wait)
        return jobs.c.started_at - jobs.c.enqueued_at, jobs.c.model, (jobs.c.started_at.is_not(None),)
    if kind == "run":  # ended jobs that ran, by outcome
        return (jobs.c.completed_at - jobs.c.started_at, jobs.c.status,
                (jobs.c.status.in_(TERMINAL), jobs.c.started_at.is_not(None), jobs.c.completed_at.is_not(None)))
    if kind == "step":  # succeeded jobs' mean denoising step, by resolution bucket
        return jobs.c.step_seconds, jobs.c.size_bucket, (jobs.c.step_seconds.is_not(None),)
    raise ValueError(kind)


class StoreStats:
    """Aggregates over the job rows (mixed into `JobStore`, which owns `engine`)."""

    engine: Engine

    def histogram(self, kind: str, bounds: Sequence[float]) -> list[HistogramRows]:
        """Cumulative counts of `kind` (queue_wait | run | step) per label, for the given upper bounds."""
        value, label, conditions = _measure(kind)
        columns = [label.label("label"), func.count().label("n"), func.coalesce(func.sum(value), 0.0).label("s")]
        columns += [func.sum(case((value <= bound, 1), else_=0)).label(f"b{i}") for i, bound in enumerate(bounds)]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*columns).where(*conditions).group_by(label)).all()
        return [HistogramRows(str(row.label or "unknown"), [int(row[3 + i] or 0) for i in range(len(bounds))],
                              int(row.n), float(row.s)) for row in rows]

    def running_jobs(self) -> int:
        """Jobs processing now."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(jobs.c.status == PROCESSING)).scalar_one())
