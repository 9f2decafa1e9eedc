"""The request extensions against a live `ltx-server serve` (tiny model, real worker process, real HTTP).

One job uses keyframes (a middle one and an end image) and a LoRA from --lora-dir; its record shows
what was used and the MP4 has the asked-for frames. (Prompt enhancement is left to the in-process
tests, where its length bound can be small: the tiny Gemma writes 512 tokens slowly on a CPU.)
"""

from __future__ import annotations

import base64

import pytest
import requests

from lora_files import build_tiny_lora
from sample_media import png_bytes, read_mp4
from serverkit import LiveServer, wait_for


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("extensions")
    build_tiny_lora(tiny_weights, root / "loras" / "style.safetensors", rank=4, seed=1)
    (root / "data").mkdir()
    live = LiveServer(root / "data", args=["--lora-dir", str(root / "loras")]).start()
    yield live
    live.stop()
    live.cleanup()


@pytest.mark.slow
def test_one_job_with_keyframes_and_a_lora(server):
    listing = requests.get(f"{server.api}/ai/loras", timeout=30).json()["data"]
    assert [row["name"] for row in listing] == ["style"]
    body = {"model": "ltx-2-3-quality-image-to-video", "prompt": "a boat", "input_image": data_uri(png_bytes(96, 64)),
            "resolution": "128x128", "num_frames": 17, "generate_audio": False, "seed": 4,
            "keyframes": [{"image": data_uri(png_bytes(64, 64)), "frame_index": 8, "strength": 0.7}],
            "end_image": data_uri(png_bytes(64, 96)), "loras": [{"name": "style", "scale": 0.5}]}
    created = requests.post(f"{server.api}/ai/queue", json=body, timeout=60)
    assert created.status_code == 200, created.text
    job_id = created.json()["generations"][0]["generation_id"]
    row = wait_for(lambda: requests.get(f"{server.api}/ai/queue/{job_id}", timeout=30).json(),
                   lambda r: r["status"] in ("succeeded", "failed"), timeout=600)
    assert row["status"] == "succeeded", row
    assert row["output"]["loras"] == [{"name": "style", "scale": 0.5, "sha256": listing[0]["sha256"]}]
    assert row["keyframes"][0]["frame_index"] == 8 and row["end_image_strength"] == 1.0
    assert "keyframe_images" not in row and "enhanced_prompt" not in row
    video = requests.get(row["result_url"], timeout=60)
    assert video.status_code == 200
    path = server.data_dir / "fetched.mp4"
    path.write_bytes(video.content)
    assert read_mp4(path).video_frames == 17
