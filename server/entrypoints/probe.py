"""The weights and GPU probe `serve` runs in a child process, so the API process never imports torch.

    python -m server.entrypoints.probe --weights W --data-dir D --plan P

prints one JSON object: {"ok": true, "device", "smoke_test", "notice", "path", "version_text",
"gpus": [{"index", "vram_bytes", "plan", "summary"}]} or {"ok": false, "error": "<sentence>"}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.engine import EngineSpec, describe_weights, gpu_plans
from pipeline.errors import PipelineError


def probe(weights: str, data_dir: Path, plan: str, gpus_per_job: int = 1) -> dict[str, Any]:
    """Resolve the weights (building the tiny model if it is the choice) and plan every visible GPU."""
    try:
        info = describe_weights(EngineSpec(weights=weights, data_dir=data_dir))
        gpus = gpu_plans(plan, gpus_per_job) if info.device.startswith("cuda") and not info.smoke_test else []
    except (PipelineError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "device": info.device, "smoke_test": info.smoke_test, "notice": info.notice,
            "path": str(info.path), "version_text": info.version_text, "gpus": [asdict(g) for g in gpus]}


def run_probe(weights: str, data_dir: Path, plan: str, timeout: float = 600, gpus_per_job: int = 1) -> dict[str, Any]:
    """`probe` in a fresh interpreter; its answer as a dict (a crash becomes {"ok": false})."""
    command = [sys.executable, "-m", "server.entrypoints.probe", "--weights", weights, "--data-dir", str(data_dir),
               "--plan", plan, "--gpus-per-job", str(gpus_per_job)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return {"ok": False, "error": f"the weights probe failed: {tail[0]}"}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m server.entrypoints.probe")
    parser.add_argument("--weights", default="auto")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--plan", default="auto")
    parser.add_argument("--gpus-per-job", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(probe(args.weights, args.data_dir, args.plan, args.gpus_per_job)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
