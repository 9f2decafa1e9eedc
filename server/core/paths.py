"""The data directory's layout, in one place.

    <data dir>/jobs.sqlite3                       the default job store (SQLite, WAL)
    <data dir>/jobs.sqlite3.migrate.lock          held while a process migrates that store's schema
    <data dir>/url-signing.key                    the result-URL signing secret (0600)
    <data dir>/results/<owner digest>/<id>.mp4    result files (owner names never shape paths)
    <data dir>/scratch/<id>.mp4                   with --results s3://...: rendered here, then uploaded
    <data dir>/cache/...                          the tiny model and other caches (written by the pipeline)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

STORE_FILE = "jobs.sqlite3"
SIGNING_KEY_FILE = "url-signing.key"
RESULTS_DIR = "results"
CACHE_DIR = "cache"


def owner_directory(owner: str) -> str:
    """Result subdirectory of an owner: a digest, so owner names never shape paths."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DataPaths:
    """Where each thing lives under one data directory."""

    root: Path

    @property
    def store_file(self) -> Path:
        return self.root / STORE_FILE

    @property
    def default_store_url(self) -> str:
        return f"sqlite:///{self.store_file}"

    @property
    def signing_key(self) -> Path:
        return self.root / SIGNING_KEY_FILE

    @property
    def results(self) -> Path:
        return self.root / RESULTS_DIR

    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR

    def result_file(self, owner: str, job_id: str) -> Path:
        """Where a job's MP4 is written."""
        return self.results / owner_directory(owner) / f"{job_id}.mp4"

    def relative(self, path: Path) -> str:
        """A path under the data directory as stored in a job record."""
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def resolve(self, recorded: str) -> Path:
        """A job record's relative path back to a file."""
        return self.root / recorded
