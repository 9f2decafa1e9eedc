"""`/v1/videos` end to end with the real `openai` SDK against a live `ltx-server serve --weights tiny`:
create with an uploaded image, poll to completion, download the MP4 and its thumbnail, and read the
same job through Oxen's queue API."""

from __future__ import annotations

import io
import time

import av
import httpx
import openai
import pytest

from server.api.schemas import MODEL_ID
from serverkit import KEY_A, KEY_B, png_bytes

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


def test_sdk_create_poll_download_and_cross_api_view(keyed_live, tmp_path):
    live = keyed_live
    api = openai.OpenAI(base_url=live.base + "/v1", api_key=KEY_A, max_retries=0)
    image = ("start.png", io.BytesIO(png_bytes(128, 128)), "image/png")
    video = api.videos.create(model=MODEL_ID, prompt="a red square drifting", input_reference=image,
                              seconds="0.4", size="128x128", extra_body={"frames_per_second": 20})
    assert video.status in ("queued", "in_progress")
    deadline = time.monotonic() + 120
    while video.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.5)
        video = api.videos.retrieve(video.id)
    assert video.status == "completed" and video.progress == 100 and video.completed_at
    assert video.size == "128x128" and video.seconds == "0.45"
    path = tmp_path / "out.mp4"
    api.videos.download_content(video.id).write_to_file(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.codec_context.width, stream.codec_context.height) == (128, 128)
    assert frames == 9
    thumb = api.videos.download_content(video.id, variant="thumbnail").content
    assert thumb[:3] == b"\xff\xd8\xff"  # JPEG
    with pytest.raises(openai.BadRequestError):
        api.videos.download_content(video.id, variant="spritesheet")
    oxen = httpx.get(f"{live.api}/ai/queue/{video.id}", headers={"Authorization": f"Bearer {KEY_A}"}).json()
    assert oxen["status"] == "succeeded" and oxen["num_frames"] == 9 and oxen["result_url"]
    assert video.id in [v.id for v in api.videos.list(limit=100)]
    assert api.videos.delete(video.id).deleted is False  # already ended: nothing to cancel
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=live.base + "/v1", api_key=KEY_B, max_retries=0).videos.retrieve(video.id)
    with pytest.raises(openai.BadRequestError, match="multiples of 64"):
        api.videos.create(model=MODEL_ID, prompt="p", input_reference=image, size="100x100")
