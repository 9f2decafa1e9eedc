"""Warm vs cold: the first job after start vs the following ones, and prompt-cache hits vs misses.

Runs in a fresh child process (so "cold" is really cold): loads the tiny model, then runs
job 1 (new prompt), job 2 (same prompt: the embedding cache hits), job 3 (new prompt: a miss on
warm models), job 4 (job 2 again). Prints per-job times, text-encoder calls and the prompt
encoding time on a hit and on a miss.

    python bench/warm_cold.py [--markdown]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = {"resolution": "256x256", "num_frames": 25}


def child() -> dict:
    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.generation.runtime import VideoGenerator
    from pipeline.params import GenerationParams
    from pipeline.weights.tiny import ensure_tiny_model

    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = ensure_tiny_model(Path(tmp))
        clock = time.perf_counter()
        generator = VideoGenerator.from_directory(weights)
        rows["load"] = {"seconds": time.perf_counter() - clock, "encoder_calls": 0}
        for name, prompt in [("job 1: cold, new prompt", "a lighthouse at dusk"),
                             ("job 2: warm, same prompt (cache hit)", "a lighthouse at dusk"),
                             ("job 3: warm, new prompt (cache miss)", "a fox in the snow"),
                             ("job 4: warm, same prompt again", "a fox in the snow")]:
            calls = generator.text_encoder_calls
            request = GenerationParams(prompt=prompt, seed=1, **JOB)
            clock = time.perf_counter()
            generator.generate(request, buffer.getvalue(), Path(tmp) / "out.mp4")
            rows[name] = {"seconds": time.perf_counter() - clock, "encoder_calls": generator.text_encoder_calls - calls}
        with torch.inference_mode():
            clock = time.perf_counter()
            generator.encode_prompt("a fox in the snow")
            hit = time.perf_counter() - clock
            clock = time.perf_counter()
            generator.encode_prompt("a prompt never seen before")
            miss = time.perf_counter() - clock
    return {"rows": rows, "hit_ms": hit * 1000, "miss_ms": miss * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()))
        return
    done = subprocess.run([sys.executable, __file__, "--child"], check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lines = [[name, f"{row['seconds']:.3f}", str(row["encoder_calls"])] for name, row in result["rows"].items()]
    header = [f"step ({JOB['resolution']}, {JOB['num_frames']} frames)", "seconds", "text-encoder calls"]
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|---|---:|---:|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        for line in [header, *lines]:
            print(f"{line[0]:44}{line[1]:>10}{line[2]:>20}")
    print(f"prompt encoding: cache hit {result['hit_ms']:.2f} ms, miss {result['miss_ms']:.1f} ms "
          "(tiny Gemma; the real 12B encoder makes a miss cost far more)")


if __name__ == "__main__":
    main()
