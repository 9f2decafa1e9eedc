"""Results as files under `<data dir>/results/<owner digest>/<id>.mp4` (one machine, or a shared mount).

The engine writes under a temporary name and renames, so publishing is a no-op: the file
appears whole under its final name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from server.core.paths import DataPaths

CHUNK = 1 << 20


class LocalResults:
    """The `local` backend (today's directory layout; records hold paths relative to the data directory)."""

    name = "local"

    def __init__(self, data_dir: Path):
        self.paths = DataPaths(Path(data_dir))

    def scratch_path(self, owner: str, job_id: str) -> Path:
        path = self.paths.result_file(owner, job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, owner: str, job_id: str, path: Path) -> str:
        return self.paths.relative(path)

    def local_file(self, key: str) -> Path | None:
        if key.startswith("s3://"):
            return None
        path = self.paths.resolve(key)
        return path if path.is_file() else None

    def size(self, key: str) -> int | None:
        path = self.local_file(key)
        return path.stat().st_size if path else None

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self.local_file(key)
        if path is None:
            raise FileNotFoundError(key)
        with open(path, "rb") as handle:
            handle.seek(start)
            left = None if end is None else end - start + 1
            while left is None or left > 0:
                chunk = handle.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        if key.startswith("s3://"):
            raise ValueError(f"{key} is in object storage; this server is configured with --results local")
        with contextlib.suppress(FileNotFoundError):
            self.paths.resolve(key).unlink()
