"""Per-key submission limits: the token bucket and the active-job cap, enforced through the store
(so two API processes on one store enforce one limit), with 429 + Retry-After in the envelope."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.api.main import create_app
from server.api.services.accept import submit_limits
from server.core.config import ServerConfig
from server.queue import JobStore, LimitExceeded, NewJob, SubmitLimits
from serverkit import KEY_A, KEY_B, png_bytes, tiny_body

KEYS = f"alice:{KEY_A},bob:{KEY_B}"
SLOW_REFILL = 0.6  # jobs per minute: one token per 100 s, so nothing refills during a test


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def app_client(data_dir: Path, **options) -> TestClient:
    config = ServerConfig(data_dir=data_dir, api_keys=KEYS, **options)
    return TestClient(create_app(config), client=("127.0.0.1", 50000))


def test_limits_are_off_without_keys_and_on_with_keys(tmp_path):
    assert submit_limits(ServerConfig(data_dir=tmp_path)) is None
    keyed = submit_limits(ServerConfig(data_dir=tmp_path, api_keys=KEYS))
    assert keyed == SubmitLimits(rate=0.5, burst=10.0, max_active=50)
    assert submit_limits(ServerConfig(data_dir=tmp_path, api_keys=KEYS, rate_limit=0, max_active_jobs=0)) is None
    assert submit_limits(ServerConfig(data_dir=tmp_path, rate_limit=6, max_active_jobs=3)) == SubmitLimits(
        rate=0.1, burst=10.0, max_active=3)


def test_rate_limit_is_429_with_retry_after_and_shared_by_two_api_processes(tmp_path):
    options = {"rate_limit": SLOW_REFILL, "rate_burst": 2, "max_active_jobs": 0}
    with app_client(tmp_path, **options) as first, app_client(tmp_path, **options) as second:
        assert first.post("/api/ai/queue", headers=auth(), json=tiny_body()).status_code == 200
        assert second.post("/api/ai/queue", headers=auth(), json=tiny_body()).status_code == 200
        refused = first.post("/api/ai/queue", headers=auth(), json=tiny_body())
        assert refused.status_code == 429
        assert 90 <= int(refused.headers["retry-after"]) <= 100
        body = refused.json()
        assert body["status"] == "error" and body["error"]["type"] == "rate_limited"
        assert "at most 0.6 jobs per minute" in body["error"]["detail"]
        # The sync endpoint and OpenAI's share the bucket; another key has its own.
        assert second.post("/api/ai/videos/generate", headers=auth(),
                           json=tiny_body(response_format="url")).status_code == 429
        openai = second.post("/v1/videos", headers=auth(), json={"prompt": "p", "input_reference": {
            "image_url": tiny_body()["input_image"]}})
        assert openai.status_code == 429 and openai.json()["error"]["code"] == "rate_limit_exceeded"
        assert "retry-after" in openai.headers
        assert first.post("/api/ai/queue", headers=auth(KEY_B), json=tiny_body()).status_code == 200
        # Refused before the start image is fetched: an unresolvable host is not even looked up.
        nowhere = first.post("/api/ai/queue", headers=auth(), json=tiny_body(input_image="http://no-such.invalid/a.png"))
        assert nowhere.status_code == 429
        # Copies count: two copies need two tokens.
        assert second.post("/api/ai/queue", headers=auth(KEY_B), json=tiny_body(num_generations=2)).status_code == 429


def test_active_cap_counts_queued_and_processing_jobs(tmp_path):
    with app_client(tmp_path, rate_limit=0, max_active_jobs=2) as client:
        ids = [client.post("/api/ai/queue", headers=auth(), json=tiny_body()).json()["generations"][0]["generation_id"]
               for _ in range(2)]
        full = client.post("/api/ai/queue", headers=auth(), json=tiny_body())
        assert full.status_code == 429 and full.json()["error"]["type"] == "rate_limited"
        assert "has 2 jobs queued or processing; the limit is 2" in full.json()["error"]["detail"]
        assert client.post("/api/ai/queue", headers=auth(KEY_B), json=tiny_body()).status_code == 200
        client.delete(f"/api/ai/queue/{ids[0]}", headers=auth())
        assert client.post("/api/ai/queue", headers=auth(), json=tiny_body()).status_code == 200


def _new_job(owner: str = "o") -> tuple[NewJob, bytes]:
    image = png_bytes()
    return NewJob(owner=owner, model="m", params={"prompt": "p"}, input_sha256=hashlib.sha256(image).hexdigest()), image


def test_store_enforces_the_cap_under_concurrent_enqueues(store_url):
    """Eight threads (each its own store, as separate API processes) race for a cap of 3."""
    stores = [JobStore(store_url) for _ in range(8)]
    limits = SubmitLimits(rate=0.0, max_active=3)
    outcomes: list[str] = []
    barrier = threading.Barrier(len(stores))

    def submit(store: JobStore) -> None:
        job, image = _new_job()
        barrier.wait()
        try:
            store.enqueue([job], image, limits=limits)
            outcomes.append("accepted")
        except LimitExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["accepted"] * 3 + ["refused"] * 5
    assert len(stores[0].list(owner="o")) == 3
    for store in stores:
        store.close()


def test_store_token_bucket_refills_and_a_refusal_spends_nothing(store_url):
    store = JobStore(store_url)
    limits = SubmitLimits(rate=1.0, burst=2, max_active=0)
    for _ in range(2):
        store.enqueue([_new_job()[0]], png_bytes(), now=1000.0, limits=limits)
    with pytest.raises(LimitExceeded) as refused:
        store.enqueue([_new_job()[0]], png_bytes(), now=1000.2, limits=limits)
    assert refused.value.kind == "rate" and refused.value.retry_after == 1
    store.enqueue([_new_job()[0]], png_bytes(), now=1001.0, limits=limits)  # one token back after 1 s
    store.enqueue([_new_job()[0]], png_bytes(), now=1002.0, limits=limits)
    assert len(store.list(owner="o")) == 4
    with pytest.raises(LimitExceeded):  # three copies never fit a burst of two
        store.enqueue([_new_job()[0] for _ in range(3)], png_bytes(), now=5000.0, limits=limits)
    store.close()
