"""`ltx-server generate` as a user runs it: a real subprocess, files and exit codes checked."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sample_media import png_bytes, read_mp4


def ltx(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "ltx-server"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "start.png"
    path.write_bytes(png_bytes(96, 64))
    return path


def test_single_job_writes_the_mp4_and_reports_the_seed(tiny_weights, tmp_path, image):
    out = tmp_path / "out" / "clip.mp4"
    done = ltx(
        "generate", "--weights", "tiny", "--image", str(image), "--prompt", "waves on a beach",
        "--num-frames", "12", "--resolution", "128x128", "--fps", "29.97", "--generate-audio", "false",
        "--video-quality", "low", "--image-strength", "1.0", "-o", str(out), cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "smoke-test" in done.stderr and "produces noise" in done.stderr
    assert "seed " in done.stdout and str(out) in done.stdout
    facts = read_mp4(out)
    assert (facts.video_frames, facts.width, facts.height, facts.audio_codec) == (12, 128, 128, None)
    assert float(facts.fps) == pytest.approx(29.97)


def test_same_seed_on_the_command_line_gives_identical_files(tiny_weights, tmp_path, image):
    outputs = []
    for name in ("a.mp4", "b.mp4"):
        done = ltx("generate", "--weights", "tiny", "--image", str(image), "--prompt", "p", "--num-frames", "9",
                   "--resolution", "128x128", "--seed", "77", "--no-progress", "-o", str(tmp_path / name), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "p", "-o", "x.mp4"], "input_image (--image) is required"),
        (["--image", "IMG", "-o", "x.mp4"], "--prompt is required"),
        (["--image", "IMG", "--prompt", "p"], "-o/--output is required"),
        (["--image", "IMG", "--prompt", "p", "--num-frames", "5", "-o", "x.mp4"],
         "num_frames: must be an integer between 9 and 481 (got 5)"),
        (["--image", "IMG", "--prompt", "p", "--resolution", "999x999", "-o", "x.mp4"], "resolution: WIDTHxHEIGHT"),
        (["--image", "IMG", "--prompt", "p", "--weights", "/nonexistent", "-o", "x.mp4"], "has no model_index.json"),
        (["--image", "missing.png", "--prompt", "p", "--num-frames", "9", "--resolution", "128x128", "--weights",
          "tiny", "-o", "x.mp4"], "cannot read image missing.png: no such file"),
    ],
)
def test_bad_arguments_give_one_clear_line_and_a_nonzero_exit(tiny_weights, tmp_path, image, args, message):
    done = ltx("generate", *[str(image) if a == "IMG" else a for a in args], cwd=tmp_path)
    assert done.returncode != 0
    lines = [line for line in done.stderr.strip().splitlines() if "NOTICE" not in line]
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr


def test_argparse_errors_are_one_line_too(tmp_path):
    done = ltx("generate", "--video-quality", "ultra", cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid choice: 'ultra'" in done.stderr and "Traceback" not in done.stderr


def test_batch_runs_every_line_with_one_model_load(tiny_weights, tmp_path, image):
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_bytes(64, 64)[:100])  # exists, but cannot be decoded: fails at run time
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes(64, 64, seed=8)).decode()
    lines = [
        {"prompt": "one", "input_image": str(image), "num_frames": 9, "resolution": "128x128", "seed": 1},
        {"prompt": "two", "input_image": data_uri, "num_frames": 17, "resolution": "128x192", "output": "named.mp4",
         "generate_audio": False},
        {"prompt": "three", "input_image": str(broken), "num_frames": 9, "resolution": "128x128"},
    ]
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out_dir = tmp_path / "results"
    done = ltx("generate", "--weights", "tiny", "--batch", str(batch), "--out-dir", str(out_dir), cwd=tmp_path)
    assert done.returncode == 1  # the third line's image is broken; the others still ran
    assert "jobs.jsonl line 3: error: input_image could not be decoded" in done.stderr
    assert done.stderr.count("NOTICE") == 1  # one model load for the whole batch
    assert read_mp4(out_dir / "0001.mp4").video_frames == 9
    named = read_mp4(out_dir / "named.mp4")
    assert (named.video_frames, named.width, named.height, named.audio_codec) == (17, 128, 192, None)
    manifest = [json.loads(row) for row in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [row["status"] for row in manifest] == ["succeeded", "succeeded", "failed"]
    assert manifest[0]["seed"] == 1 and isinstance(manifest[1]["seed"], int)


def test_a_bad_batch_line_stops_everything_before_loading(tmp_path, image):
    batch = tmp_path / "bad.jsonl"
    batch.write_text(json.dumps({"prompt": "ok", "input_image": str(image)}) + "\n{not json}\n")
    done = ltx("generate", "--weights", "tiny", "--batch", str(batch), "--out-dir", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2
    assert "bad.jsonl line 2: not valid JSON" in done.stderr
    assert not (tmp_path / "o").exists()
