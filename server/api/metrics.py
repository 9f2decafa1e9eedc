"""Prometheus metrics of one API process (queue depth and workers are read from the store at scrape time)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from server.core.liveness import local_worker_gone
from server.queue import JobStore

READY_MAX_AGE = 10.0  # a worker row older than this is not counted as ready (workers refresh every 2 s)


def ready_workers(store: JobStore) -> list[dict]:
    """Live worker rows whose model is loaded (a fresh row of a process known dead does not count)."""
    return [w for w in store.live_workers(READY_MAX_AGE) if w["ready"] and not local_worker_gone(w["id"], w["pid"])]


class Metrics:
    """The counters the routes bump and the gauges filled at scrape time."""

    def __init__(self, store: JobStore):
        self.registry = CollectorRegistry()
        self.enqueued = Counter("ltx_jobs_enqueued", "Jobs accepted.", ["endpoint"], registry=self.registry)
        self.rejected = Counter("ltx_requests_rejected", "Requests refused with 4xx.", ["reason"],
                                registry=self.registry)
        self.jobs = Gauge("ltx_jobs", "Jobs in the store by status.", ["status"], registry=self.registry)
        self.workers = Gauge("ltx_workers_ready", "Workers with their model loaded.", registry=self.registry)
        self.store = store

    def render(self) -> bytes:
        for status, count in self.store.counts().items():
            self.jobs.labels(status).set(count)
        self.workers.set(len(ready_workers(self.store)))
        return generate_latest(self.registry)
