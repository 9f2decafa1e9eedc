"""Prometheus metrics of one API process.

Counters the routes bump (enqueued, rejected) and the store's notification lag are this process's
own; everything else is read from the store at scrape time and is fleet-wide: jobs by status,
histograms of queue wait, run time (by outcome) and per-step time (by resolution bucket), worker
states and each worker's GPU memory (workers read it and write it to their row; this process never
imports torch). See `server.queue.stats` for how the histograms stay cumulative.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from server.core.liveness import local_worker_gone
from server.queue import JobStore

READY_MAX_AGE = 10.0  # a worker row older than this is not counted as ready (workers refresh every 2 s)

QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def ready_workers(store: JobStore) -> list[dict]:
    """Live worker rows whose model is loaded (a fresh row of a process known dead does not count)."""
    return [w for w in store.live_workers(READY_MAX_AGE) if w["ready"] and not local_worker_gone(w["id"], w["pid"])]


def worker_state(row: dict) -> str:
    """loading (model not ready), busy (running a job) or idle."""
    if not row["ready"]:
        return "loading"
    return "busy" if row.get("job_id") else "idle"


class FleetCollector(Collector):
    """The fleet-wide families, read from the store on each scrape."""

    def __init__(self, store: JobStore):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        for name, kind, bounds, label, text in (
            ("ltx_job_queue_wait_seconds", "queue_wait", QUEUE_WAIT_BUCKETS, "model",
             "Enqueue to start of every started job (fleet-wide, from the store)."),
            ("ltx_job_run_seconds", "run", RUN_BUCKETS, "outcome",
             "Start to end of every ended job, by outcome; _count is jobs by outcome (fleet-wide)."),
            ("ltx_job_step_seconds", "step", STEP_BUCKETS, "resolution",
             "Mean denoising step time of each succeeded job, by resolution bucket (fleet-wide)."),
        ):
            family = HistogramMetricFamily(name, text, labels=[label])
            for rows in self.store.histogram(kind, bounds):
                buckets = [(floatToGoString(bound), count) for bound, count in zip(bounds, rows.buckets, strict=True)]
                buckets.append(("+Inf", rows.count))
                family.add_metric([rows.label], buckets, rows.total)
            yield family
        states = GaugeMetricFamily("ltx_workers", "Live worker processes by state (one engine: a GPU or a GPU "
                                   "group).", labels=["state"])
        allocated = GaugeMetricFamily("ltx_worker_gpu_memory_allocated_bytes", "GPU memory in use by a worker's "
                                      "tensors.", labels=["worker", "device"])
        reserved = GaugeMetricFamily("ltx_worker_gpu_memory_reserved_bytes", "GPU memory reserved by a worker's "
                                     "caching allocator.", labels=["worker", "device"])
        counts = {"loading": 0, "idle": 0, "busy": 0}
        for row in self.store.live_workers(READY_MAX_AGE):
            counts[worker_state(row)] += 1
            if row.get("gpu_memory_allocated") is not None:
                allocated.add_metric([row["id"], row["device"] or ""], row["gpu_memory_allocated"])
                reserved.add_metric([row["id"], row["device"] or ""], row["gpu_memory_reserved"] or 0)
        for state, count in counts.items():
            states.add_metric([state], count)
        yield states
        yield allocated
        yield reserved


class Metrics:
    """The counters the routes bump, the notification lag, and the gauges filled at scrape time."""

    def __init__(self, store: JobStore):
        self.registry = CollectorRegistry()
        self.enqueued = Counter("ltx_jobs_enqueued", "Jobs accepted.", ["endpoint"], registry=self.registry)
        self.rejected = Counter("ltx_requests_rejected", "Requests refused with 4xx.", ["reason"],
                                registry=self.registry)
        self.jobs = Gauge("ltx_jobs", "Jobs in the store by status.", ["status"], registry=self.registry)
        self.workers = Gauge("ltx_workers_ready", "Workers with their model loaded.", registry=self.registry)
        self.notification_lag = Histogram(
            "ltx_store_notification_lag_seconds", "Commit of a store change to this process's wake-up "
            "(PostgreSQL LISTEN/NOTIFY; across hosts it includes their clock difference).",
            buckets=LAG_BUCKETS, registry=self.registry)
        self.registry.register(FleetCollector(store))
        self.store = store

    def render(self) -> bytes:
        for status, count in self.store.counts().items():
            self.jobs.labels(status).set(count)
        self.workers.set(len(ready_workers(self.store)))
        return generate_latest(self.registry)
