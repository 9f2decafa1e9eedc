"""End to end against a live `ltx-server serve --weights tiny`: the contract's client flows run
as a client would run them, plus cancel, failures, keys and events.

One server (one CPU worker, two API keys; `keyed_live` in conftest.py) is shared with the image
tests; requests are 128x128, 9 frames.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest
import requests

from server.api.schemas import MODEL_ID
from serverkit import KEY_A, KEY_B, tiny_body, wait_for

TERMINAL = {"succeeded", "failed", "cancelled"}
SLOW = "[[test-step-delay=0.3]]"  # honoured by tests/support/faulty_engine.py: makes a job last a few seconds


@pytest.fixture(scope="module")
def live(keyed_live):
    return keyed_live


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def enqueue(live, body: dict, key: str = KEY_A) -> list[str]:
    response = httpx.post(live.api + "/ai/queue", headers=auth(key), json=body, timeout=30)
    assert response.status_code == 200, response.text
    return [g["generation_id"] for g in response.json()["generations"]]


def get(live, generation_id: str, key: str = KEY_A) -> dict:
    return httpx.get(f"{live.api}/ai/queue/{generation_id}", headers=auth(key), timeout=10).json()


def wait_status(live, generation_id: str, statuses=TERMINAL, timeout: float = 90, key: str = KEY_A) -> dict:
    return wait_for(lambda: get(live, generation_id, key), lambda row: row.get("status") in statuses, timeout)


def assert_mp4(data: bytes) -> None:
    assert len(data) > 1000 and data[4:8] == b"ftyp"


# ---- models, auth, validation ----------------------------------------------------------------


def test_models_publish_the_validating_schema_and_the_tiny_notice(live):
    listed = httpx.get(live.api + "/ai/models", headers=auth()).json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [MODEL_ID]
    model = httpx.get(f"{live.api}/ai/models/{MODEL_ID}", headers=auth()).json()
    assert model["object"] == "model" and model["endpoint"] == "/videos/generate"
    assert model["request_schema"] == model["json_request_schema"]
    schema = model["request_schema"]
    assert set(schema["required"]) == {"prompt", "input_image"}
    # Oxen's fields in the contract's order, then this server's extensions (issue 17).
    assert list(schema["properties"]) == ["prompt", "input_image", "num_frames", "resolution",
                                          "frames_per_second", "image_strength", "generate_audio",
                                          "video_quality", "negative_prompt", "seed",
                                          "keyframes", "end_image", "end_image_strength", "loras", "enhance_prompt"]
    assert schema["properties"]["input_image"]["format"] == "uri"
    assert schema["properties"]["num_frames"]["maximum"] == 481
    assert model["smoke_test"] is True and "tiny" in model["description"] and "NOTICE" in model["notice"]
    missing = httpx.get(live.api + "/ai/models/not-a-model", headers=auth())
    assert missing.status_code == 404 and missing.json() == {"error": {"message": "Model not found: not-a-model"}}


# ---- the three client flows ------------------------------------------------------------------


def test_sync_flow_returns_a_signed_url_serving_the_mp4_with_ranges(live):
    response = requests.post(live.api + "/ai/videos/generate", headers=auth(), json=tiny_body(), timeout=120)
    response.raise_for_status()
    data = response.json()
    assert data["model"] == MODEL_ID and isinstance(data["created"], int)
    (video,) = data["videos"]
    assert set(video) == {"url"} and video["url"].startswith(live.api + "/results/")
    download = httpx.get(video["url"])
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    assert_mp4(download.content)
    part = httpx.get(video["url"], headers={"Range": "bytes=4-7"})
    assert part.status_code == 206 and part.content == b"ftyp"
    assert part.headers["content-range"] == f"bytes 4-7/{len(download.content)}"
    tampered = video["url"].replace("signature=", "signature=0")
    assert httpx.get(tampered).status_code == 403
    generation_id = video["url"].split("/results/")[1].split(".mp4")[0]
    expired = f"{live.api}/results/{generation_id}.mp4?expires=1&signature=00"
    assert httpx.get(expired).status_code == 403


def test_sync_flow_b64_json(live):
    response = requests.post(live.api + "/ai/videos/generate", headers=auth(),
                             json=tiny_body(response_format="b64_json"), timeout=120)
    response.raise_for_status()
    (video,) = response.json()["videos"]
    assert set(video) == {"b64_json"}
    assert_mp4(base64.b64decode(video["b64_json"]))


def test_polling_flow_as_documented(live):
    enqueue_response = requests.post(live.api + "/ai/queue", headers=auth(), json=tiny_body(seed=7))
    enqueue_response.raise_for_status()
    generation_id = enqueue_response.json()["generations"][0]["generation_id"]
    assert enqueue_response.json()["generations"][0]["status"] == "queued"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        data = requests.get(f"{live.api}/ai/queue/{generation_id}", headers=auth()).json()
        if data["status"] in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.2)  # the snippet sleeps 5 s; the protocol is the same
    assert data["status"] == "succeeded", data
    assert data["result_url"] and data["error_message"] is None
    assert data["model_name"] == data["model"] == MODEL_ID and data["media_type"] == "video"
    assert data["prompt"] == tiny_body()["prompt"] and data["seed"] == 7 and data["num_frames"] == 9
    assert data["frames_per_second"] == 24 and data["progress"] == 1
    assert data["enqueued_at"] <= data["started_at"] <= data["completed_at"]
    assert_mp4(httpx.get(data["result_url"]).content)


def test_sse_flow_python_as_documented(live):
    enqueue_response = requests.post(live.api + "/ai/queue", headers=auth(), json=tiny_body())
    enqueue_response.raise_for_status()
    generation_id = enqueue_response.json()["generations"][0]["generation_id"]
    found = None
    seen_events = []
    with requests.get(live.api + "/events", headers={"Authorization": f"Bearer {KEY_A}"}, stream=True,
                      timeout=60) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event_name = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event_name = line.removeprefix("event: ")
                seen_events.append(event_name)
            elif line.startswith("data: ") and event_name == "media_generation_completed":
                raw = line.removeprefix("data: ")
                payload = json.loads(raw)
                if payload.get("generation_id") == generation_id:
                    assert f'"generation_id":"{generation_id}"' in raw and ", " not in raw  # compact JSON
                    found = payload
                    break
    assert found is not None
    assert found["status"] == "succeeded" and found["media_type"] == "video" and found["model"] == MODEL_ID
    assert_mp4(httpx.get(found["url"]).content)


def test_sse_flow_curl_awk_jq_as_documented(live, have_jq):
    if not have_jq:
        pytest.skip("curl and jq are needed for the documented cURL flow")
    script = r"""
set -eu  # no pipefail: curl exits 23 when awk stops reading, as in the documented flow
GEN_ID=$(curl -s -X POST "$BASE/ai/queue" \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer $OXEN_API_KEY" \
  -d "$BODY" | jq -r '.generations[0].generation_id')
echo "$GEN_ID" > "$ID_FILE"
curl -sN -H "Authorization: Bearer $OXEN_API_KEY" "$BASE/events" \
  | awk -v id="$GEN_ID" '
    /^event: media_generation_completed$/ { expect=1; next }
    /^data: / && expect {
      payload = substr($0, 7)
      if (index(payload, "\"generation_id\":\"" id "\"")) { print payload; exit }
      expect = 0
    }
  ' | jq .
"""
    id_file = live.data_dir / "curl-gen-id"
    env = {**os.environ, "BASE": live.api, "OXEN_API_KEY": KEY_A, "BODY": json.dumps(tiny_body()),
           "ID_FILE": str(id_file)}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["generation_id"] == id_file.read_text().strip()
    assert payload["status"] == "succeeded" and payload["url"].startswith("http")


def test_sse_subscriber_after_completion_still_gets_it(live):
    (generation_id,) = enqueue(live, tiny_body())
    wait_status(live, generation_id)  # finished before the stream opens
    events = read_events(live, KEY_A, until=lambda name, data: data.get("generation_id") == generation_id
                         and name == "media_generation_completed", timeout=15)
    assert events[-1][1]["status"] == "succeeded"


def read_events(live, key: str, until, timeout: float, lines: list[str] | None = None) -> list[tuple[str, dict]]:
    """Read an SSE stream until `until(name, payload)`; returns the (name, payload) pairs seen."""
    events: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", live.api + "/events", headers=auth(key), timeout=timeout) as stream:
        name = None
        for line in stream.iter_lines():
            if lines is not None:
                lines.append(line)
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if until(name, events[-1][1]):
                    return events
            if time.monotonic() > deadline:
                break
    return events


def test_events_are_per_key_with_keepalive_and_extension_events(live):
    def subscribe(key: str, until, timeout: float) -> tuple[threading.Thread, list[str], list]:
        lines: list[str] = []
        events: list[tuple[str, dict]] = []
        thread = threading.Thread(target=lambda: events.extend(
            read_events(live, key, until=until, timeout=timeout, lines=lines)), daemon=True)
        thread.start()
        wait_for(lambda: list(lines), lambda seen: ": connected" in seen, timeout=10)
        return thread, lines, events

    job: dict[str, str] = {}
    alice, _, alice_events = subscribe(KEY_A, lambda n, d: n == "media_generation_completed"
                                       and d["generation_id"] == job.get("id"), timeout=60)
    bob, bob_lines, bob_events = subscribe(KEY_B, lambda n, d: False, timeout=4)
    (job["id"],) = enqueue(live, tiny_body(prompt=f"per key {SLOW}"))  # both streams are open already
    alice.join(timeout=70)
    names = [name for name, data in alice_events if data.get("generation_id") == job["id"]]
    assert names[0] == "media_generation_started" and names[-1] == "media_generation_completed"
    assert "media_generation_progress" in names
    progress = [d["progress"] for n, d in alice_events if n == "media_generation_progress"
                and d["generation_id"] == job["id"]]
    assert progress == sorted(progress) and 0 < progress[-1] <= 1
    bob.join(timeout=15)
    assert ": keep-alive" in bob_lines
    assert all(data.get("generation_id") != job["id"] for _, data in bob_events)


# ---- queue behaviour ----------------------------------------------------------------------------


def test_num_generations_4_and_list_filters(live):
    ids = enqueue(live, tiny_body(prompt="four copies", num_generations=4))
    assert len(set(ids)) == 4
    active = httpx.get(live.api + "/ai/queue", headers=auth()).json()
    assert active["count"] == len(active["generations"])
    assert all(row["status"] in ("queued", "processing") for row in active["generations"])
    rows = [wait_status(live, generation_id) for generation_id in ids]
    assert all(row["status"] == "succeeded" for row in rows)
    started = [row["started_at"] for row in rows]
    assert started == sorted(started)  # FIFO within a key
    assert len({row["seed"] for row in rows}) > 1  # each copy got its own seed
    succeeded = httpx.get(live.api + "/ai/queue", params={"status": "succeeded"}, headers=auth()).json()
    assert set(ids) <= {row["generation_id"] for row in succeeded["generations"]}
    assert succeeded["count"] == len(succeeded["generations"])
    by_model = httpx.get(live.api + "/ai/queue", params={"status": "succeeded", "model": MODEL_ID,
                                                         "media_type": "video"}, headers=auth()).json()
    assert by_model["count"] == succeeded["count"]
    other = httpx.get(live.api + "/ai/queue", params={"status": "succeeded", "model": "x"}, headers=auth()).json()
    assert other == {"count": 0, "generations": []}
    wait_for(lambda: httpx.get(live.api + "/ai/queue", headers=auth()).json()["count"], lambda c: c == 0)
    oxen_only = httpx.get(live.api + "/ai/queue", params={"namespace": "ns", "repo": "r", "folder": "f"},
                          headers=auth())
    assert oxen_only.status_code == 200  # Oxen repository filters are accepted (there are no repositories)
    bad = httpx.get(live.api + "/ai/queue", params={"status": "done"}, headers=auth())
    assert bad.status_code == 400 and "status must be one of" in bad.json()["error"]["detail"]


def test_seed_given_is_kept_for_every_copy(live):
    # Slow copies (faulty engine's step delay): each cancel lands while its job is queued or mid-run.
    ids = enqueue(live, tiny_body(prompt=f"seeded {SLOW}", seed=1234, num_generations=2))
    assert [get(live, i)["seed"] for i in ids] == [1234, 1234]
    for generation_id in ids:  # the seed is fixed at enqueue time; no need to run them
        httpx.delete(f"{live.api}/ai/queue/{generation_id}", headers=auth())
        assert wait_status(live, generation_id)["status"] == "cancelled"


def test_cancel_while_queued_and_while_processing(live):
    (running,) = enqueue(live, tiny_body(prompt=f"long job {SLOW}"))
    (waiting,) = enqueue(live, tiny_body(prompt="queued behind it"))
    wait_status(live, running, {"processing"}, timeout=60)
    assert get(live, waiting)["status"] == "queued"
    response = httpx.delete(f"{live.api}/ai/queue/{waiting}", headers=auth())
    assert response.json() == {"status": "success", "generation_id": waiting}
    assert get(live, waiting)["status"] == "cancelled"  # at once
    wait_for(lambda: get(live, running), lambda row: row["progress"] > 0, timeout=30)
    httpx.delete(f"{live.api}/ai/queue/{running}", headers=auth())
    cancelled = get(live, running)
    assert cancelled["status"] == "cancelled" and cancelled["result_url"] is None and cancelled["completed_at"]
    # The worker stops generating (GenerationCancelled, not a finished file) and takes the next job.
    (after,) = enqueue(live, tiny_body(prompt="after the cancel"))
    assert wait_status(live, after)["status"] == "succeeded"
    wait_for(lambda: live.log(), lambda text: f"job {running}: cancelled" in text, timeout=10)
    assert f"job {running}: succeeded" not in live.log()
    assert not list(live.data_dir.glob(f"results/*/{running}.mp4"))
    # Cancelling an ended job changes nothing.
    assert httpx.delete(f"{live.api}/ai/queue/{after}", headers=auth()).status_code == 200
    assert get(live, after)["status"] == "succeeded"


def test_sync_client_that_goes_away_cancels_its_job(live):
    prompt = f"nobody waits for me {SLOW}"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(live.api + "/ai/videos/generate", headers=auth(), json=tiny_body(prompt=prompt), timeout=1.5)
    listed = wait_for(
        lambda: httpx.get(live.api + "/ai/queue", params={"status": "all"}, headers=auth()).json()["generations"],
        lambda rows: any(r["prompt"] == prompt and r["status"] == "cancelled" for r in rows), timeout=30)
    assert [r["status"] for r in listed if r["prompt"] == prompt] == ["cancelled"]


def test_injected_out_of_memory_fails_the_job_and_the_worker_goes_on(live):
    pid = live.worker_pid()
    (oom,) = enqueue(live, tiny_body(prompt="[[test-oom]] please"))
    failed = wait_status(live, oom)
    assert failed["status"] == "failed" and failed["result_url"] is None
    assert failed["error_message"].startswith("Out of memory") and "lower resolution" in failed["error_message"]
    (after,) = enqueue(live, tiny_body())
    assert wait_status(live, after)["status"] == "succeeded"
    assert live.worker_pid() == pid  # same process: no restart needed


def test_killed_worker_job_is_retried_once_then_failed(live):
    (generation_id,) = enqueue(live, tiny_body(prompt=f"doomed {SLOW}"))
    wait_status(live, generation_id, {"processing"}, timeout=60)
    first_pid = live.worker_pid()
    os.kill(first_pid, signal.SIGKILL)
    # The supervisor notices, requeues the job and starts a new worker, which runs attempt 2.
    retried = wait_for(lambda: get(live, generation_id),
                       lambda row: row["status"] == "processing" and row["attempts"] == 2, timeout=90)
    assert retried["status"] == "processing"
    second_pid = wait_for(live.worker_pid, lambda pid: pid != first_pid, timeout=60)
    os.kill(second_pid, signal.SIGKILL)
    failed = wait_status(live, generation_id)
    assert failed["status"] == "failed"
    assert "died" in failed["error_message"] and "retried once" in failed["error_message"]
    # The API stayed up throughout and the restarted worker serves the next job.
    (after,) = enqueue(live, tiny_body())
    assert wait_status(live, after)["status"] == "succeeded"


def test_key_isolation(live):
    (alice_job,) = enqueue(live, tiny_body(prompt="alice's"), key=KEY_A)
    (bob_job,) = enqueue(live, tiny_body(prompt="bob's"), key=KEY_B)
    assert httpx.get(f"{live.api}/ai/queue/{alice_job}", headers=auth(KEY_B)).status_code == 404
    assert httpx.delete(f"{live.api}/ai/queue/{alice_job}", headers=auth(KEY_B)).status_code == 404
    wait_status(live, alice_job)
    bob_rows = httpx.get(live.api + "/ai/queue", params={"status": "all"}, headers=auth(KEY_B)).json()
    assert {row["generation_id"] for row in bob_rows["generations"]} == {bob_job}
    assert get(live, alice_job)["status"] == "succeeded"  # bob's cancel did nothing
    assert wait_status(live, bob_job, key=KEY_B)["status"] == "succeeded"


def test_health_metrics_openapi(live):
    assert httpx.get(live.base + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(live.base + "/readyz")
    assert ready.status_code == 200 and ready.json()["workers_ready"] == 1
    metrics = httpx.get(live.base + "/metrics").text
    assert 'ltx_jobs{status="succeeded"}' in metrics and "ltx_workers_ready 1.0" in metrics
    spec = httpx.get(live.base + "/openapi.json").json()
    for path in ("/api/ai/queue", "/api/ai/queue/{generation_id}", "/api/ai/videos/generate", "/api/events",
                 "/api/ai/models", "/api/ai/models/{model_id}"):
        assert path in spec["paths"]
    body = spec["paths"]["/api/ai/queue"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "num_generations" in body["properties"]
