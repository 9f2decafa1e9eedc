"""bench/gpu_check.py --dry-run: the one-shot GPU check's code paths, on the CPU at tiny sizes.

The real run needs a CUDA card (BENCHMARKS.md, "GPU check"); this rehearses every section with
the tiny configs so that the one device run is not spent on a typo.
"""

from __future__ import annotations

import json
import sys

import pytest

from repo_paths import REPO

sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402


@pytest.mark.slow
def test_the_dry_run_runs_every_section_and_writes_its_report(tmp_path):
    report = gpu_check.run(tmp_path, dry_run=True, budget_s=900)
    assert set(report["status"]) == {"tiny_e2e", "transformer", "plans", "components", "oom_recovery", "projection"}
    assert all(status.startswith("ok") for status in report["status"].values()), report["status"]
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    records = saved["records"]
    assert records["tiny_e2e"]["passes"] == 11 and records["tiny_e2e"]["finite"]
    assert records["tiny_e2e"]["mp4_frames"] == 25
    passes = records["transformer"]["passes"]
    assert {p["compiled"] for p in passes} == {False, True} and all(p["pass_s"] > 0 for p in passes)
    assert "scaled_dot_product" in records["transformer"]["sdpa_kernel"]
    rows = {row["plan"]: row for row in records["plans"]["rows"]}
    assert list(rows) == ["resident", "encoder-offload", "fp8", "offload"] and all(r["fits"] for r in rows.values())
    parts = records["components"]
    assert {"vae_decode_tiled", "vae_decode_untiled", "upsampler", "audio", "text"} <= set(parts)
    assert parts["text"]["swapped_s"] > 0
    oom = records["oom_recovery"]
    assert oom["simulated"] and oom["failed_as_oom"] and oom["next_job_ok"] and oom["ok"]
    assert [row["job"] for row in records["projection"]["rows"]] == ["128x128, 17 frames", "256x256, 17 frames"]
    assert all("offload_s" in row for row in records["projection"]["rows"])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "Plans under emulated cards" in table and "Projected whole job" in table
    assert not (tmp_path / "calibration.json").exists()  # a dry run measures nothing to calibrate with
