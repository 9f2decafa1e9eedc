"""The worker registry: one row per live worker process (readiness, model kind, liveness)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from server.queue.tables import workers


class WorkerRegistry:
    """Worker rows (mixed into `JobStore`, which owns `engine`)."""

    engine: Engine

    def register_worker(
        self, worker_id: str, device: str, pid: int, ready: bool, smoke_test: bool, notice: str | None,
        now: float | None = None,
    ) -> None:
        """Insert or refresh a worker's row (readiness, model kind, liveness)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(workers).where(workers.c.id == worker_id).values(
                    device=device, pid=pid, ready=ready, smoke_test=smoke_test, notice=notice, last_seen=now)
            ).rowcount
            if not changed:
                conn.execute(insert(workers).values(
                    id=worker_id, device=device, pid=pid, ready=ready, smoke_test=smoke_test, notice=notice,
                    started_at=now, last_seen=now))

    def worker_seen(self, worker_id: str, now: float | None = None, job_id: str | None = None,
                    gpu_memory: tuple[int, int] | None = None) -> None:
        """Liveness ping, with the job it runs (None: idle) and its GPU memory (allocated, reserved) if any."""
        now = time.time() if now is None else now
        allocated, reserved = gpu_memory if gpu_memory else (None, None)
        with self.engine.begin() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(
                last_seen=now, job_id=job_id, gpu_memory_allocated=allocated, gpu_memory_reserved=reserved))

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        with self.engine.begin() as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))

    def live_workers(self, max_age: float, now: float | None = None) -> list[dict[str, Any]]:
        """Workers seen within `max_age` seconds."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            rows = conn.execute(select(workers).where(workers.c.last_seen >= now - max_age)).all()
        return [dict(row._mapping) for row in rows]

    def all_workers(self) -> list[dict[str, Any]]:
        """Every worker row, however old (the janitor prunes the dead ones)."""
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(select(workers)).all()]
