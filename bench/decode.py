"""Video decode on the tiny model: the reference's tiling (the runtime default) at a few sizes.

Each case runs in a fresh child process so its peak RSS is its own: load the tiny model, decode a
random latent through `VideoGenerator._video_frames` (tiles, blend, uint8; no encoding) and time
it. "group buffers" is the largest temporal group's weighted sum (3 channels) and weights (1
channel), float32 at full frame size, computed from the tile plan: what the streamed decode
holds besides one tile's decoder activations and the division at the group's yield. "whole
clip" is the float32 output of the clip, which an unstreamed decode would hold at once. The
untiled row decodes the clip in one decoder call (`decode_tiling=None`).

    python bench/decode.py            # text table
    python bench/decode.py --markdown # the BENCHMARKS.md rows
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table import print_table  # bench/ is on sys.path when a script runs

CASES = [
    {"width": 512, "height": 512, "frames": 121, "tiled": True},
    {"width": 512, "height": 512, "frames": 121, "tiled": False},
    {"width": 768, "height": 768, "frames": 121, "tiled": True},
    {"width": 1024, "height": 576, "frames": 121, "tiled": True},
    {"width": 1024, "height": 576, "frames": 241, "tiled": True},
]
MiB = 1024**2


def child(spec: dict) -> dict:
    """Decode one random latent of `spec`'s size; time, tiles and peak RSS."""
    from fractions import Fraction

    import torch

    from pipeline.generation.decode import REFERENCE_TILING, plan_tiles
    from pipeline.generation.runtime import VideoGenerator, _Tracker
    from pipeline.geometry import Geometry, pixel_frames
    from pipeline.weights.tiny import ensure_tiny_model

    width, height, frames = spec["width"], spec["height"], spec["frames"]
    tiling = REFERENCE_TILING if spec["tiled"] else None
    with tempfile.TemporaryDirectory() as tmp:
        generator = VideoGenerator.from_directory(ensure_tiny_model(Path(tmp) / "cache"), decode_tiling=tiling)
    channels = generator.components.vae.config.latent_channels
    latent_shape = ((frames - 1) // 8 + 1, height // 32, width // 32)
    latent = torch.randn((1, channels, *latent_shape), generator=torch.Generator().manual_seed(0))
    geometry = Geometry(width, height, frames, pixel_frames(latent_shape[0]), Fraction(24))
    groups = plan_tiles(*latent_shape, tiling)
    group_frames = max(group[0].pixels[0].stop - group[0].pixels[0].start for group in groups)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clock = time.perf_counter()
    decoded = 0
    with torch.inference_mode():
        for chunk in generator._video_frames(latent, geometry, _Tracker(None, None)):
            decoded += len(chunk)
    seconds = time.perf_counter() - clock
    assert decoded == frames
    return {
        "latent": "x".join(map(str, latent_shape)), "groups": len(groups), "tiles": sum(map(len, groups)),
        "group_mib": group_frames * height * width * (3 + 1) * 4 / MiB,
        "clip_mib": geometry.generated_frames * height * width * 3 * 4 / MiB,
        "seconds": seconds, "rss_before_mib": before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    header = ["decode", "latent (f x h x w)", "frames", "groups / tiles", "group buffers MiB", "whole clip MiB",
              "decode s", "peak RSS MiB (after load)"]
    rows = []
    for spec in CASES:
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                              check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        name = f"{'reference tiles' if spec['tiled'] else 'untiled, one call'} {spec['width']}x{spec['height']}"
        rows.append([
            name, row["latent"], str(spec["frames"]), f"{row['groups']} / {row['tiles']}", f"{row['group_mib']:.0f}",
            f"{row['clip_mib']:.0f}", f"{row['seconds']:.2f}",
            f"{row['peak_rss_mib']:.0f} ({row['rss_before_mib']:.0f})",
        ])
    print_table(header, rows, args.markdown)


if __name__ == "__main__":
    main()
