"""Encoding: our streaming MP4 writer vs the bundled ffmpeg run directly on the same raw input.

Synthetic frames (a moving gradient with texture) and 48 kHz stereo audio are written once to raw
files; then, side by side, (a) the bundled ffmpeg encodes them straight from the files with the
same settings, (b) `pipeline.generation.mp4.write_mp4` encodes them from frame chunks read from the same file,
as the runtime streams decoded frames. Each writer runs in a fresh child process so its peak RSS
is its own. Prints times, the ratio (goal <= 1.1) and peak memory (must stay flat as frames grow).

    python bench/encoding.py [--quality high] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from table import print_table  # bench/ is on sys.path when a script runs

from pipeline.generation.mp4 import encoding_settings, ffmpeg_command, write_mp4  # noqa: E402

CASES = [(121, 1024, 576), (481, 1024, 576), (121, 1536, 1024)]
FPS = Fraction(24)
RATE = 48_000
CHUNK = 16  # frames per chunk handed to the writer (the runtime hands 32-65 per decoded temporal group)


def synthesize(raw: Path, audio: Path, frames: int, width: int, height: int) -> None:
    """Write `frames` rgb24 frames and matching f32le stereo audio."""
    y, x = np.mgrid[0:height, 0:width]
    texture = (np.random.default_rng(0).random((height, width)) * 24).astype(np.int32)
    with raw.open("wb") as out:
        for i in range(frames):
            base = (x + 2 * y + 5 * i) + texture
            frame = np.stack([base % 256, (base // 2 + 3 * i) % 256, (255 - base) % 256], axis=-1).astype(np.uint8)
            out.write(frame.tobytes())
    samples = round(frames / FPS * RATE)
    t = np.arange(samples, dtype=np.float32) / RATE
    np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1).astype("<f4").tofile(audio)


def child(spec: dict) -> dict:
    raw, audio, out = Path(spec["raw"]), Path(spec["audio"]), Path(spec["out"])
    width, height, quality = spec["width"], spec["height"], spec["quality"]
    clock = time.perf_counter()
    if spec["mode"] == "ffmpeg":
        command = ffmpeg_command(width, height, FPS, encoding_settings(quality), out, audio)
        command[command.index("pipe:0")] = str(raw)  # read the raw frames from the file directly
        subprocess.run(command, check=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        python_peak = 0.0
    else:
        pcm = np.fromfile(audio, dtype="<f4").reshape(-1, 2).T

        def chunks():
            size = width * height * 3
            with raw.open("rb") as source:
                while block := source.read(size * CHUNK):
                    yield np.frombuffer(block, dtype=np.uint8).reshape(-1, height, width, 3)

        write_mp4(out, chunks(), width, height, FPS, quality, pcm, RATE)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        python_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": time.perf_counter() - clock, "ffmpeg_peak_mib": peak, "python_peak_mib": python_peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quality", default="high", choices=["low", "medium", "high", "maximum"])
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per case; the fastest counts")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for frames, width, height in CASES:
            raw, audio = Path(tmp) / "frames.rgb", Path(tmp) / "audio.f32"
            synthesize(raw, audio, frames, width, height)
            best: dict[str, dict] = {}
            for _ in range(args.rounds):
                for mode in ("ffmpeg", "ours"):
                    spec = {"mode": mode, "raw": str(raw), "audio": str(audio), "out": str(Path(tmp) / f"{mode}.mp4"),
                            "width": width, "height": height, "frames": frames, "quality": args.quality}
                    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True,
                                          capture_output=True, text=True)
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    if mode not in best or result["seconds"] < best[mode]["seconds"]:
                        best[mode] = result
            same = (Path(tmp) / "ffmpeg.mp4").stat().st_size == (Path(tmp) / "ours.mp4").stat().st_size
            rows.append((f"{frames} x {width}x{height}", best, same))
    header = ["frames", "ffmpeg direct s", "ours s", "ours/direct", "ours python peak MiB", "ffmpeg peak MiB",
              "same size"]
    lines = [[name, f"{b['ffmpeg']['seconds']:.2f}", f"{b['ours']['seconds']:.2f}",
              f"{b['ours']['seconds'] / b['ffmpeg']['seconds']:.3f}", f"{b['ours']['python_peak_mib']:.0f}",
              f"{b['ours']['ffmpeg_peak_mib']:.0f}", "yes" if same else "no"] for name, b, same in rows]
    print_table(header, lines, args.markdown)


if __name__ == "__main__":
    main()
