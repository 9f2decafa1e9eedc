"""The `s3` results backend against a real S3-speaking server process (moto on loopback): publishing,
ranged reads through the API's signed URL, retention deleting the object."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from s3_server import S3_ENV, running_s3_server
from server.api.main import create_app
from server.api.services.janitor import apply_retention
from server.api.services.result_files import RangeNotSatisfiable, parse_range
from server.core.config import ServerConfig
from server.queue import JobStore, NewJob
from server.results import S3Results, open_results, parse_s3_location

MP4 = b"\0\0\0\x18ftypisom" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def s3():
    saved = {name: os.environ.get(name) for name in S3_ENV}
    os.environ.update(S3_ENV)
    with running_s3_server() as server:
        yield server
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _finished_job(store: JobStore, owner: str = "alice") -> str:
    (job,) = store.enqueue([NewJob(owner=owner, model="m", params={"prompt": "p"}, input_sha256="s")], b"i", now=0.0)
    store.claim_next("w", 30, now=1.0)
    return job.id


def test_publish_read_ranges_and_delete(s3, tmp_path):
    bucket = s3.new_bucket()
    backend = open_results(f"s3://{bucket}/fleet/results", tmp_path, s3.endpoint)
    assert isinstance(backend, S3Results)
    scratch = backend.scratch_path("alice", "job-1")
    assert not scratch.is_relative_to(tmp_path / "results")  # rendered on the worker's disk, then uploaded
    scratch.write_bytes(MP4)
    key = backend.publish("alice", "job-1", scratch)
    assert key.startswith(f"s3://{bucket}/fleet/results/") and key.endswith("/job-1.mp4")
    assert not scratch.exists()  # the scratch copy is gone once the object exists
    assert s3.keys(bucket) == [key.removeprefix(f"s3://{bucket}/")]
    assert backend.size(key) == len(MP4) and backend.local_file(key) is None
    assert b"".join(backend.read(key)) == MP4
    assert b"".join(backend.read(key, 4, 7)) == b"ftyp"
    backend.delete(key)
    assert backend.size(key) is None and s3.keys(bucket) == []
    backend.delete(key)  # already gone: no error


def test_api_serves_s3_results_by_proxy_and_retention_deletes_objects(s3, tmp_path):
    bucket = s3.new_bucket()
    config = ServerConfig(data_dir=tmp_path, insecure=True, results=f"s3://{bucket}", s3_endpoint_url=s3.endpoint)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    job_id = _finished_job(store, owner="local")
    backend = open_results(config.results, tmp_path, s3.endpoint)
    scratch = backend.scratch_path("local", job_id)
    scratch.write_bytes(MP4)
    store.complete(job_id, "w", backend.publish("local", job_id, scratch), {}, now=2.0)
    app = create_app(config, store=store)
    with TestClient(app) as client:
        url = client.get(f"/api/ai/queue/{job_id}").json()["result_url"]
        path = url[url.index("/api/results/"):]
        full = client.get(path)
        assert full.status_code == 200 and full.content == MP4 and full.headers["content-type"] == "video/mp4"
        part = client.get(path, headers={"Range": "bytes=4-7"})
        assert part.status_code == 206 and part.content == b"ftyp"
        assert part.headers["content-range"] == f"bytes 4-7/{len(MP4)}"
        assert client.get(path, headers={"Range": f"bytes={len(MP4)}-"}).status_code == 416
        head = client.head(path)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(MP4)) and not head.content
        assert apply_retention(store, backend, retention_hours=1, now=2.0 + 3601) == [job_id]
        assert s3.keys(bucket) == []
        assert client.get(path).status_code == 404
    store.close()


def test_range_parsing():
    assert parse_range(None, 100) is None and parse_range("bytes=1-2,5-6", 100) is None
    assert parse_range("bytes=10-", 100) == (10, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=0-500", 100) == (0, 99)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-", 100)
    assert parse_s3_location("s3://b") == ("b", "") and parse_s3_location("s3://b/x/y/") == ("b", "x/y/")
    with pytest.raises(ValueError):
        open_results("gs://nope", "/tmp")


def test_a_failed_upload_raises_and_leaves_nothing_behind(s3, tmp_path):
    backend = open_results("s3://no-such-bucket-here", tmp_path, s3.endpoint)
    scratch = backend.scratch_path("alice", "job-x")
    scratch.write_bytes(MP4)
    with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        backend.publish("alice", "job-x", scratch)  # the worker records this as the job's failure
    assert not scratch.exists()
