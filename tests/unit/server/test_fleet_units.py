"""Pure pieces of the fleet work: resolution buckets, JSON log lines with the generation id,
worker states, notification payloads, S3 locations."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from server.api.metrics import worker_state
from server.core.job_logs import JobIdFilter, JsonFormatter, job_context
from server.core.size_buckets import LARGER, UNKNOWN, size_bucket
from server.queue.notify import channel_name, decode_payload, encode_payload, libpq_url
from server.results import parse_s3_location


@pytest.mark.parametrize(("resolution", "bucket"), [
    ("128x128", "<=256x256"), ("256x256", "<=256x256"), ("480x640", "<=640x480"), ("768x768", "<=1280x720"),
    ("1280x720", "<=1280x720"), ("1080x1920", "<=1920x1080"), ("2560x1440", LARGER), ("big", UNKNOWN),
    (None, UNKNOWN),
])
def test_size_bucket(resolution, bucket):
    assert size_bucket(resolution) == bucket


def _record(message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord("ltx_server.worker", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    JobIdFilter().filter(record)
    return record


def test_json_log_lines_carry_the_generation_id_inside_a_job_context():
    formatter = JsonFormatter()
    outside = json.loads(formatter.format(_record("idle")))
    assert outside["message"] == "idle" and "generation_id" not in outside and outside["level"] == "info"
    with job_context("gen-1"):
        inside = json.loads(formatter.format(_record("step 3")))
        seen_in_thread = []
        thread = threading.Thread(target=lambda: seen_in_thread.append(json.loads(formatter.format(_record("x")))))
        thread.start()
        thread.join()
    assert inside["generation_id"] == "gen-1" and isinstance(inside["time"], float)
    assert "generation_id" not in seen_in_thread[0]  # a plain thread does not inherit it (the worker copies it)
    explicit = json.loads(formatter.format(_record("janitor", generation_id="gen-2")))
    assert explicit["generation_id"] == "gen-2"


def test_worker_states():
    assert worker_state({"ready": False, "job_id": None}) == "loading"
    assert worker_state({"ready": True, "job_id": None}) == "idle"
    assert worker_state({"ready": True, "job_id": "j"}) == "busy"


def test_notification_payloads_channels_and_urls():
    assert decode_payload(encode_payload("job-1", 5.25)) == ("job-1", 5.25)
    assert decode_payload(encode_payload("", 1.0)) == ("", 1.0)
    assert decode_payload("not|ours|x")[1] is None
    assert channel_name("ltx_jobs", "tenant_a") == "ltx_jobs_tenant_a"
    assert len(channel_name("ltx_events", "s" * 100)) == 63
    url = libpq_url("postgresql+psycopg://u:p@h:5/db?options=-csearch_path%3Dx")
    assert url.startswith("postgresql://u:p@h:5/db?options=") and "search_path" in url


def test_s3_locations():
    assert parse_s3_location("s3://bucket") == ("bucket", "")
    assert parse_s3_location("s3://bucket/a/b/") == ("bucket", "a/b/")
    for bad in ("s3://", "http://bucket"):
        with pytest.raises(ValueError):
            parse_s3_location(bad)
