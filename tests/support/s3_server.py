"""A real S3-speaking server for tests: moto's standalone server (`moto[server]`) as a separate
process on a free loopback port. Never an in-process mock: the code under test talks HTTP to it
through boto3, exactly as it would to MinIO or AWS."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from serverkit import free_port

# Credentials moto accepts (any); set in the environment of every process that talks to it.
S3_ENV = {"AWS_ACCESS_KEY_ID": "ltx-test", "AWS_SECRET_ACCESS_KEY": "ltx-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    """A running moto server: its endpoint, and a bucket made for the caller."""

    endpoint: str
    process: subprocess.Popen

    def client(self):
        import boto3  # deferred: only the S3 tests need boto3 at import time

        return boto3.client("s3", endpoint_url=self.endpoint, **_credentials())

    def new_bucket(self) -> str:
        bucket = f"ltx-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_ENV["AWS_DEFAULT_REGION"]}


@contextlib.contextmanager
def running_s3_server(timeout: float = 60) -> Iterator[S3Server]:
    """Start `python -m moto.server` on a free port, wait until it answers, stop it afterwards."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env={**os.environ, **S3_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"moto server exited with {process.returncode}")
            try:
                httpx.get(endpoint + "/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise AssertionError("moto server did not start") from None
                time.sleep(0.2)
        yield S3Server(endpoint, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
