"""Results in any S3-compatible store (AWS S3, MinIO, Ceph RGW, Cloudflare R2) through boto3.

A worker renders into a scratch file on its own disk, then uploads it with `upload_file`: a
single PUT or a multipart upload, and either way the object becomes visible only when the upload
completes (S3 never shows a partial object), and the job records the key only after that. The
API serves results by proxy (see `server.api.services.result_files`): clients keep the server's
signed URLs and never need to reach the object store. Credentials come from boto3's usual chain
(`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, an instance role); `--s3-endpoint-url`
points at a non-AWS store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from server.core.paths import owner_directory
from server.results.local import LocalResults

CHUNK = 1 << 20
SCRATCH_DIR = "scratch"


def parse_s3_location(spec: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> (`bucket`, `some/prefix/`); the prefix may be empty."""
    if not spec.startswith("s3://"):
        raise ValueError(f"not an s3:// location: {spec!r}")
    bucket, _, prefix = spec[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {spec!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3Results:
    """The `s3` backend: keys are recorded as `s3://bucket/key`; older local records are still read."""

    name = "s3"

    def __init__(self, location: str, data_dir: Path, endpoint_url: str | None = None):
        self.bucket, self.prefix = parse_s3_location(location)
        self.endpoint_url = endpoint_url
        self.local = LocalResults(data_dir)
        self.scratch = Path(data_dir) / SCRATCH_DIR
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """One boto3 client per process (thread-safe), made on first use."""
        with self._lock:
            if self._client is None:
                # Path-style addressing works on every S3-compatible store (MinIO, moto, Ceph) and on AWS.
                self._client = boto3.client("s3", endpoint_url=self.endpoint_url,
                                            config=Config(s3={"addressing_style": "path"},
                                                          retries={"max_attempts": 5, "mode": "standard"}))
            return self._client

    def key_for(self, owner: str, job_id: str) -> str:
        return f"{self.prefix}{owner_directory(owner)}/{job_id}.mp4"

    def _split(self, key: str) -> tuple[str, str]:
        bucket, _, name = key[len("s3://"):].partition("/")
        return bucket, name

    def scratch_path(self, owner: str, job_id: str) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        return self.scratch / f"{job_id}.mp4"

    def publish(self, owner: str, job_id: str, path: Path) -> str:
        name = self.key_for(owner, job_id)
        try:
            self.client.upload_file(str(path), self.bucket, name, ExtraArgs={"ContentType": "video/mp4"})
        finally:
            Path(path).unlink(missing_ok=True)
        return f"s3://{self.bucket}/{name}"

    def local_file(self, key: str) -> Path | None:
        return None if key.startswith("s3://") else self.local.local_file(key)

    def size(self, key: str) -> int | None:
        if not key.startswith("s3://"):
            return self.local.size(key)
        bucket, name = self._split(key)
        try:
            return int(self.client.head_object(Bucket=bucket, Key=name)["ContentLength"])
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if not key.startswith("s3://"):
            yield from self.local.read(key, start, end)
            return
        bucket, name = self._split(key)
        byte_range = f"bytes={start}-{'' if end is None else end}"
        try:
            body = self.client.get_object(Bucket=bucket, Key=name, Range=byte_range)["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(key) from None
            raise
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        if not key.startswith("s3://"):
            self.local.delete(key)
            return
        bucket, name = self._split(key)
        self.client.delete_object(Bucket=bucket, Key=name)  # S3 deletes are idempotent
