"""Tiny-model pipeline benchmark: transformer passes, stage times and peak memory per job.

Each configuration runs in a fresh child process so its peak RSS is its own. Prints a table.

    python bench/tiny_pipeline.py            # the default request and a small one
    python bench/tiny_pipeline.py --markdown # the same table as Markdown, for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table import print_table

CONFIGS = {
    "all defaults (auto from 512x512 -> 768x768, 121 frames)": {"image": 512, "request": {}},
    "256x256, 25 frames": {"image": 256, "request": {"resolution": "256x256", "num_frames": 25}},
    "landscape_16_9 1024x576, 241 frames": {
        "image": 512, "request": {"resolution": "landscape_16_9", "num_frames": 241},
    },
}


def child(spec: dict) -> dict:
    """Load the tiny model, run the job once, report timings, passes and peak RSS."""
    import numpy as np
    from PIL import Image

    from pipeline.generation.runtime import VideoGenerator
    from pipeline.params import GenerationParams
    from pipeline.weights.tiny import ensure_tiny_model

    side = spec["image"]
    pixels = (np.random.default_rng(0).random((side, side, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    with tempfile.TemporaryDirectory() as tmp:
        clock = time.perf_counter()
        generator = VideoGenerator.from_directory(ensure_tiny_model(Path(tmp) / "cache"))
        load = time.perf_counter() - clock
        request = GenerationParams(prompt="a lighthouse at dusk", seed=0,
                               **spec["request"])
        clock = time.perf_counter()
        result = generator.generate(request, buffer.getvalue(), Path(tmp) / "out.mp4")
        total = time.perf_counter() - clock
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"load_s": load, "total_s": total, "passes": result.transformer_passes, "peak_rss_mib": peak_mib,
            **{f"{k}_s": v for k, v in result.timings.items()},
            "size": f"{result.width}x{result.height}x{result.num_frames}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--only", help="run only the configurations whose name contains this text")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    rows = []
    for name, spec in CONFIGS.items():
        if args.only and args.only not in name:
            continue
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                              check=True)
        rows.append((name, json.loads(done.stdout.strip().splitlines()[-1])))
    columns = ["passes", "prepare_s", "stage1_s", "upsample_s", "stage2_s", "decode_and_encode_s", "total_s",
               "peak_rss_mib"]
    print_table(["job", *columns], [[name, *(_fmt(row[c]) for c in columns)] for name, row in rows], args.markdown)


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.2f}"


if __name__ == "__main__":
    main()
