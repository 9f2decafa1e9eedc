"""Resolution buckets for per-step metrics: a request's `WIDTHxHEIGHT` -> a small fixed set of labels.

Labels are by pixel count (orientation does not matter), so a Prometheus label never takes an
unbounded set of values.
"""

from __future__ import annotations

# (label, largest pixel count in it), smallest first
BUCKETS: tuple[tuple[str, int], ...] = (
    ("<=256x256", 256 * 256),
    ("<=640x480", 640 * 480),
    ("<=1280x720", 1280 * 720),
    ("<=1920x1080", 1920 * 1080),
)
LARGER = ">1920x1080"
UNKNOWN = "unknown"


def size_bucket(resolution: str | None) -> str:
    """The bucket label of a `WIDTHxHEIGHT` string (`unknown` when it is not one)."""
    try:
        width, height = (int(part) for part in str(resolution).lower().split("x"))
    except ValueError:
        return UNKNOWN
    pixels = width * height
    for label, limit in BUCKETS:
        if pixels <= limit:
            return label
    return LARGER
