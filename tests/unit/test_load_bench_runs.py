"""bench/load.py --runs: the table of several runs (one row each, then the median and the worst of
each column, and how many runs kept the status reads' p99 within the goal)."""

from __future__ import annotations

import sys

from repo_paths import REPO

sys.path.insert(0, str(REPO / "bench"))

import load  # noqa: E402


def run_counts(p99: float, rps: float, missed: int = 0) -> dict:
    return {"poll_p99_ms": p99, "poll_p50_ms": 0.5, "rps": rps, "waited_ms_per_s": 40.0, "in_flight_share": 1.0,
            "missed": missed, "foreign": 0}


def test_runs_table_gives_a_row_per_run_and_the_median_and_worst():
    header, rows = load.runs_table([run_counts(3.0, 570), run_counts(5.5, 560, missed=1), run_counts(4.0, 575)], 5.0)
    assert header[:4] == ["run", "status read p99 ms", "p50 ms", "requests/s"]
    assert [row[:2] for row in rows[:3]] == [["1", "3.0"], ["2", "5.5"], ["3", "4.0"]]
    summary = rows[3]
    assert summary[1] == "4.0 (5.5)"  # the worst p99 is the highest
    assert summary[3] == "570.0 (560.0)"  # the worst rate is the lowest
    assert summary[5] == "100.0 (100.0)"  # the share of time a job was in flight, in percent
    assert summary[6] == "1 / 0; p99 within 5 ms in 2 of 3"
