"""`/metrics` reports the fleet from the store: queue-wait, run-time and per-step histograms,
jobs by outcome, workers by state and their GPU memory (on SQLite and PostgreSQL)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from server.api.main import create_app
from server.core.config import ServerConfig
from server.queue import JobStore, NewJob


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_fleet_metrics_from_the_store(store_url, tmp_path):
    store = JobStore(store_url)
    new = [NewJob(owner="o", model="m", params={"prompt": "p"}, input_sha256="s") for _ in range(3)]
    a, b, c = store.enqueue(new, b"img", now=100.0)
    store.claim_next("w1", 30, now=100.02)  # waited 20 ms
    store.complete(a.id, "w1", "results/a.mp4", {}, now=101.0, step_seconds=0.03, size_bucket="<=256x256")
    store.claim_next("w1", 30, now=103.0)  # waited 3 s
    store.fail(b.id, "w1", "boom", now=110.0)
    store.register_worker("w1", "cuda:0", 1, True, False, None)
    store.worker_seen("w1", job_id=None, gpu_memory=(5 * 2**30, 6 * 2**30))
    store.register_worker("w2", "cpu", 2, True, False, None)
    store.worker_seen("w2", job_id=c.id)
    store.register_worker("w3", "cpu", 3, False, False, None)
    app = create_app(ServerConfig(data_dir=tmp_path, store=store_url), store=store)
    with TestClient(app) as client:
        samples = _samples(client.get("/metrics").text)
    store.close()
    wait = "ltx_job_queue_wait_seconds"
    assert samples[(f"{wait}_count", (("model", "m"),))] == 2
    assert samples[(f"{wait}_bucket", (("le", "0.025"), ("model", "m")))] == 1
    assert samples[(f"{wait}_bucket", (("le", "5.0"), ("model", "m")))] == 2
    run = "ltx_job_run_seconds"
    assert samples[(f"{run}_count", (("outcome", "succeeded"),))] == 1
    assert samples[(f"{run}_count", (("outcome", "failed"),))] == 1
    assert samples[(f"{run}_sum", (("outcome", "failed"),))] == 7.0
    step = "ltx_job_step_seconds"
    assert samples[(f"{step}_bucket", (("le", "0.025"), ("resolution", "<=256x256")))] == 0
    assert samples[(f"{step}_bucket", (("le", "0.05"), ("resolution", "<=256x256")))] == 1
    assert samples[("ltx_workers", (("state", "idle"),))] == 1
    assert samples[("ltx_workers", (("state", "busy"),))] == 1
    assert samples[("ltx_workers", (("state", "loading"),))] == 1
    assert samples[("ltx_worker_gpu_memory_allocated_bytes", (("device", "cuda:0"), ("worker", "w1")))] == 5 * 2**30
    assert samples[("ltx_worker_gpu_memory_reserved_bytes", (("device", "cuda:0"), ("worker", "w1")))] == 6 * 2**30
    assert not any(name == "ltx_worker_gpu_memory_allocated_bytes" and ("worker", "w2") in labels
                   for name, labels in samples)
    assert ("ltx_store_notification_lag_seconds_count", ()) in samples
