"""The one recovery and retention loop of a deployment: it runs in the API process (`create_app`'s lifespan).

* jobs whose worker stopped sending heartbeats (lease expired) are retried once, then failed;
* jobs of a worker known to have died (the supervisor reports it through `worker_died`) are
  recovered at once instead of waiting for the lease;
* results past `--retention-hours` are deleted from their backend, files or objects (their records
  stay and say so);
* old event rows and start images no active job needs are pruned.

Workers and the supervisor do not recover jobs themselves: they report, the janitor acts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import anyio

from server.core.config import ServerConfig
from server.core.debris import sweep_leftovers
from server.core.liveness import local_worker_gone
from server.queue import JobStore
from server.results import LocalResults, ResultStore, write_directories

log = logging.getLogger("ltx_server.janitor")

INPUT_KEEP_SECONDS = 600.0  # start images are needed only while their jobs are active
STALE_WORKER_SECONDS = 300.0  # a worker row not refreshed for this long is forgotten (its job: by lease)


class Janitor:
    """Periodic upkeep of one store."""

    def __init__(self, store: JobStore, data_dir: Path, lease_seconds: float = 60.0, retention_hours: float = 0.0,
                 events_grace_seconds: float = 120.0, results: ResultStore | None = None):
        self.store = store
        self.results = results or LocalResults(data_dir)
        self.write_dirs = write_directories(data_dir)  # where interrupted writes leave temporary files
        self.retention_hours = retention_hours
        self.events_keep_seconds = max(3600.0, 2 * events_grace_seconds)
        self.interval = max(0.5, min(30.0, lease_seconds / 4))

    @classmethod
    def from_config(cls, config: ServerConfig, store: JobStore, results: ResultStore | None = None) -> Janitor:
        return cls(store, config.data_dir, config.lease_seconds, config.retention_hours, config.events_grace_seconds,
                   results)

    def run_once(self, now: float | None = None) -> None:
        """One pass: recover abandoned jobs, apply retention, prune events and start images."""
        now = time.time() if now is None else now
        for job_id in self.store.recover_abandoned(now):
            log.warning("job %s: worker lost (lease expired); retried or failed", job_id,
                        extra={"generation_id": job_id})
        if self.retention_hours > 0:
            apply_retention(self.store, self.results, self.retention_hours, now)
        self.store.prune_events(now - self.events_keep_seconds)
        self.store.prune_inputs(now - INPUT_KEEP_SECONDS)
        self.forget_dead_workers(now)
        for directory in self.write_dirs:
            for path in sweep_leftovers(directory, self.store.running_ids):
                log.info("removed %s, left by an interrupted write", path.name)

    def forget_dead_workers(self, now: float | None = None) -> None:
        """Rows of workers whose process is gone from this host, or silent for minutes, are removed.

        A local dead process's job is recovered at once (as when the supervisor reports it).
        """
        now = time.time() if now is None else now
        for row in self.store.all_workers():
            if local_worker_gone(row["id"], row["pid"]):
                self.worker_died(row["id"], f"its worker process (pid {row['pid']}) is gone")
            elif row["last_seen"] < now - STALE_WORKER_SECONDS:
                self.store.remove_worker(row["id"])

    def worker_died(self, worker_id: str, reason: str) -> list[str]:
        """A worker process is gone (the supervisor saw it exit): recover its job now, forget its row."""
        touched = self.store.recover_abandoned(worker_id=worker_id, reason=reason)
        for job_id in touched:
            log.warning("job %s: %s; retried or failed", job_id, reason, extra={"generation_id": job_id})
        self.store.remove_worker(worker_id)
        return touched

    async def run(self) -> None:
        """Forever, every `interval` seconds (a failed pass is logged and retried)."""
        while True:
            try:
                await anyio.to_thread.run_sync(self.run_once)
            except Exception:
                log.exception("maintenance failed; retrying")
            await asyncio.sleep(self.interval)


def apply_retention(store: JobStore, results: ResultStore | Path, retention_hours: float,
                    now: float | None = None) -> list[str]:
    """Delete results (files or objects) older than the retention period; their records stay and say so.

    `results` may be a data directory (the local backend) for callers that have no backend at hand.
    """
    now = time.time() if now is None else now
    backend = LocalResults(results) if isinstance(results, Path) else results
    deleted = []
    for job in store.expired_results(now - retention_hours * 3600):
        backend.delete(job.result_path or "")
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
        store.mark_result_deleted(
            job.id, f"The result was deleted on {when} by this server's retention policy "
                    f"({retention_hours:g} hours after completion).", now)
        deleted.append(job.id)
    if deleted:
        log.info("retention: deleted %d result file(s)", len(deleted))
    return deleted
