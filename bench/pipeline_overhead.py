"""Pipeline overhead: our two-stage job vs bare diffusers calls on the same modules and seed.

Both run the distilled two stages (stage 1 at half size, x2 upsample, stage 2) to latents, side by
side and alternating, on the tiny model. Prints the median times, their ratio (goal <= 1.05),
the transformer passes (ours, diffusers with guidance off, diffusers with its library defaults)
and whether the latents are bit-identical (they must be, at image_strength 1.0).

    python bench/pipeline_overhead.py [--rounds 5] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusers_baseline import build_pipelines, run_two_stages  # noqa: E402
from table import print_table  # noqa: E402

from pipeline.generation.runtime import VideoGenerator  # noqa: E402
from pipeline.generation.schedule import unpack_audio  # noqa: E402
from pipeline.geometry import plan_geometry  # noqa: E402
from pipeline.params import GenerationParams  # noqa: E402
from pipeline.weights.tiny import ensure_tiny_model  # noqa: E402

JOBS = {
    "768x512, 121 frames (reference default /2)": {"resolution": "768x512", "num_frames": 121},
    "1536x1024, 121 frames (reference default)": {"resolution": "1536x1024", "num_frames": 121},
}


def measure(generator: VideoGenerator, fields: dict, rounds: int) -> dict:
    image = Image.fromarray((np.random.default_rng(0).random((512, 768, 3)) * 255).astype(np.uint8))
    request = GenerationParams(prompt="a lighthouse at dusk", image_strength=1.0, seed=7, **fields)
    geometry = plan_geometry(request, image.width, image.height)
    pipelines = build_pipelines(generator.components)
    ours_times, theirs_times = [], []
    with torch.inference_mode():
        for _ in range(rounds):
            before = generator.transformer_passes
            clock = time.perf_counter()
            ours = generator.denoise(request, image, seed=7)
            ours_times.append(time.perf_counter() - clock)
            ours_passes = generator.transformer_passes - before
            clock = time.perf_counter()
            theirs = run_two_stages(pipelines, request.prompt, image, geometry, 1.0, seed=7)
            theirs_times.append(time.perf_counter() - clock)
            theirs_passes = generator.transformer_passes - before - ours_passes
        before = generator.transformer_passes
        run_two_stages(pipelines, request.prompt, image, geometry, 1.0, seed=7, guidance={})
        default_passes = generator.transformer_passes - before
    equal = torch.equal(generator._denormalize(ours.video), theirs.video) and torch.equal(
        unpack_audio(ours.audio, theirs.audio.shape[-1]), theirs.audio
    )
    ours_s, theirs_s = statistics.median(ours_times), statistics.median(theirs_times)
    return {
        "ours_s": ours_s, "diffusers_s": theirs_s, "ratio": ours_s / theirs_s, "passes": ours_passes,
        "diffusers_passes": theirs_passes, "default_passes": default_passes, "equal": equal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generator = VideoGenerator.from_directory(ensure_tiny_model(Path(tmp)))
        rows = [(name, measure(generator, fields, args.rounds)) for name, fields in JOBS.items()]
    header = ["job", "ours s", "diffusers s", "ours/diffusers", "passes ours", "passes diffusers (guidance off)",
              "passes diffusers (library defaults)", "latents bit-equal"]
    lines = [[name, f"{r['ours_s']:.3f}", f"{r['diffusers_s']:.3f}", f"{r['ratio']:.3f}", str(r["passes"]),
              str(r["diffusers_passes"]), str(r["default_passes"]), "yes" if r["equal"] else "NO"] for name, r in rows]
    print_table(header, lines, args.markdown)


if __name__ == "__main__":
    main()
