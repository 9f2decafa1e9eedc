"""The results backend interface and the factory that picks one from `--results`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from server.core.paths import DataPaths
from server.results.local import LocalResults
from server.results.s3 import SCRATCH_DIR, S3Results


class ResultStore(Protocol):
    """What workers, the API and the janitor need from wherever results are kept."""

    name: str

    def scratch_path(self, owner: str, job_id: str) -> Path:
        """Where the engine writes a job's MP4 (on this machine's disk)."""

    def publish(self, owner: str, job_id: str, path: Path) -> str:
        """Make a finished file the job's result, all at once; returns the key to record."""

    def local_file(self, key: str) -> Path | None:
        """The result as a file on this machine, when it is one (served directly, ranges included)."""

    def size(self, key: str) -> int | None:
        """The result's size in bytes, or None when it does not exist."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `start..end` (inclusive; `end=None`: to the last byte), in chunks."""

    def delete(self, key: str) -> None:
        """Remove a result (no error when it is already gone)."""


def open_results(spec: str, data_dir: Path, s3_endpoint_url: str = "") -> ResultStore:
    """`local` (or empty): files under `<data dir>/results`; `s3://BUCKET[/PREFIX]`: that bucket."""
    spec = (spec or "local").strip()
    if spec == "local":
        return LocalResults(data_dir)
    if spec.startswith("s3://"):
        return S3Results(spec, data_dir, s3_endpoint_url or None)
    raise ValueError(f"--results must be `local` or `s3://BUCKET[/PREFIX]`, got {spec!r}")


def write_directories(data_dir: Path) -> tuple[Path, ...]:
    """Where the backends write temporary files on this machine: the local results tree and S3's scratch.

    An interrupted write leaves its `.partial`/`.f32` files here (`server.core.debris` sweeps them).
    """
    return DataPaths(Path(data_dir)).results, Path(data_dir) / SCRATCH_DIR
