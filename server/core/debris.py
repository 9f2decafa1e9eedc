"""Leftovers of interrupted result writes, and their removal.

The MP4 writer (`pipeline/generation/mp4.py`) writes `.<id>.mp4.<random>.partial` (and the audio's
`.<id>.mp4.<random>.f32`) beside the final `<id>.mp4` and renames only when complete; a process
killed in between leaves them behind. A leftover belongs to a job; it is debris once that job is
no longer running (any status but processing, or no such job): the janitor and every worker on
start remove it, so a crash-prone deployment does not slowly fill its disk.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path

_LEFTOVER = re.compile(r"^\.(?P<job>[0-9A-Za-z-]+)\.mp4\.[^./]+\.(?:partial|f32)$")


def leftover_job_id(name: str) -> str | None:
    """The job id of a temporary result file's name, or None for any other name."""
    match = _LEFTOVER.match(name)
    return match.group("job") if match else None


def sweep_leftovers(results_dir: Path, running: Callable[[Iterable[str]], set[str]]) -> list[Path]:
    """Delete the temporary result files of jobs that are not running; returns the deleted paths.

    `running(ids)` answers which of the ids are processing now (the store's `running_ids`). The
    listing comes first: a file that exists was created after its job was claimed, so a job seen
    as not running afterwards has ended or been taken back, and its file is nobody's.
    """
    if not results_dir.is_dir():
        return []
    found: dict[str, list[Path]] = {}
    for entry in results_dir.iterdir():
        # <results>/<owner>/ holds the local backend's files; a flat scratch directory holds its own
        for path in (entry.iterdir() if entry.is_dir() else (entry,)):
            job_id = leftover_job_id(path.name)
            if job_id is not None:
                found.setdefault(job_id, []).append(path)
    if not found:
        return []
    alive = running(found)
    deleted = []
    for job_id, paths in found.items():
        if job_id in alive:
            continue
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted.append(path)
    return deleted
