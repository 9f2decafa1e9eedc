"""The request extensions on the command line (`ltx-server generate`): keyframes, end image, LoRAs.

A job without LoRAs run after jobs with them, in the same process, writes the same bytes as the
same job in a fresh process: switching LoRAs off leaves the base model exactly as loaded.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_files import build_tiny_lora
from sample_media import png_bytes, read_mp4


def ltx(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(Path(sys.executable).parent / "ltx-server"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def files(tmp_path: Path, tiny_weights: Path) -> Path:
    (tmp_path / "start.png").write_bytes(png_bytes(96, 64))
    (tmp_path / "end.png").write_bytes(png_bytes(64, 96))
    build_tiny_lora(tiny_weights, tmp_path / "loras" / "style.safetensors", rank=4, seed=1)
    return tmp_path


PLAIN = {"input_image": "start.png", "prompt": "p", "num_frames": 9, "resolution": "128x128", "seed": 77,
         "generate_audio": False}


@pytest.mark.slow  # two fresh processes, four jobs
def test_a_job_without_loras_after_jobs_with_them_matches_a_fresh_process(files):
    batch = files / "batch.jsonl"
    lines = [{**PLAIN, "loras": [{"name": "style", "scale": 1.0}], "output": "styled.mp4"},
             {**PLAIN, "loras": [{"name": "style", "scale": -0.7}], "end_image": "end.png", "output": "styled2.mp4"},
             {**PLAIN, "output": "after.mp4"}]
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = ltx("generate", "--weights", "tiny", "--lora-dir", "loras", "--batch", str(batch), "--out-dir", "out",
               "--no-progress", cwd=files)
    assert done.returncode == 0, done.stderr
    fresh = ltx("generate", "--weights", "tiny", "--image", "start.png", "--prompt", "p", "--num-frames", "9",
                "--resolution", "128x128", "--seed", "77", "--generate-audio", "false", "--no-progress",
                "-o", "fresh.mp4", cwd=files)
    assert fresh.returncode == 0, fresh.stderr
    after, styled = (files / "out" / "after.mp4").read_bytes(), (files / "out" / "styled.mp4").read_bytes()
    assert after == (files / "fresh.mp4").read_bytes()
    assert styled != after  # the LoRA did change the video


def test_keyframe_end_image_and_lora_flags(files):
    done = ltx("generate", "--weights", "tiny", "--lora-dir", "loras", "--image", "start.png", "--prompt", "p",
               "--num-frames", "17", "--resolution", "128x128", "--generate-audio", "false", "--no-progress",
               "--keyframe", "end.png:8:0.5", "--end-image", "end.png", "--end-image-strength", "0.9",
               "--lora", "style:0.8", "-o", "kf.mp4", cwd=files)
    assert done.returncode == 0, done.stderr
    assert read_mp4(files / "kf.mp4").video_frames == 17


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lora", "nope"], "loras: unknown LoRA 'nope' (available: style)"),
        (["--keyframe", "end.png:20"], "keyframes: item 0: frame_index 20 is not a delivered frame"),
        (["--keyframe", "end.png"], "--keyframe 'end.png': expected IMAGE:FRAME or IMAGE:FRAME:STRENGTH"),
        (["--end-image", "missing.png"], "cannot read image missing.png: no such file"),
    ],
)
def test_bad_extension_flags_give_one_clear_line(files, args, message):
    done = ltx("generate", "--weights", "tiny", "--lora-dir", "loras", "--image", "start.png", "--prompt", "p",
               "--num-frames", "9", "--resolution", "128x128", *args, "-o", "x.mp4", cwd=files)
    assert done.returncode != 0 and message in done.stderr, done.stderr
