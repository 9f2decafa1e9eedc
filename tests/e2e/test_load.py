"""bench/load.py at a small size (its full run is in RELIABILITY.md): concurrent enqueues, paced status
polls and lists, and SSE subscribers over three keys against a live server with a busy worker;
every subscriber gets every completion of its own key and none of another key's. Counts only: no
timing is asserted (the figures are the bench's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_every_subscriber_gets_its_keys_completions_under_load(tmp_path):
    counts_file = tmp_path / "counts.json"
    command = [sys.executable, str(REPO / "bench" / "load.py"), "--seconds", "3", "--warmup", "1", "--rate", "100",
               "--list-rate", "5", "--subscribers", "9", "--jobs", "2", "--busy-resolution", "128x128",
               "--busy-frames", "17", "--json", str(counts_file)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = json.loads(counts_file.read_text())
    assert counts["accepted"] >= 4 and counts["polls"] > 0 and counts["lists"] > 0, counts
    assert counts["subscribers_with_events"] == counts["subscribers"] == 9, counts
    assert counts["owed"] == counts["accepted"] and counts["deliveries"] >= counts["owed"], counts
    assert counts["missed"] == 0 and counts["foreign"] == 0, counts
