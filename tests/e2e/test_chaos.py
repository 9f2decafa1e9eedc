"""kill -9 at random moments (20 cycles; bench/reliability.py runs 100+): nothing accepted is lost,
no broken or half-written file, no double completion, no SSE completion missed or leaked."""

from __future__ import annotations

import pytest

from chaos import run_chaos

pytestmark = pytest.mark.slow


def test_random_kills_lose_nothing_and_break_nothing(tmp_path):
    report = run_chaos(tmp_path / "data", cycles=20, seed=11)
    summary = (f"{report.cycles} cycles, kills {dict(report.kills)}, stages {dict(report.stages_at_kill)}, "
               f"{len(report.accepted)} accepted, {dict(report.statuses)}")
    print(summary)
    assert report.cycles == 20 and len(report.accepted) >= 20, summary
    assert report.lost == [], summary
    assert report.untruthful == [] and report.broken_files == [] and report.leftovers == []
    assert report.double_completions == []
    assert report.missed_events == [] and report.foreign_events == []
    assert report.statuses["succeeded"] > 0
