"""The start image as conditioning: the H.264 round trip and the cover-crop to a stage's size.

The reference conditions on a start image that looks like a video frame: compressed once with
H.264 at CRF 33 (the model was trained on such frames), then, for each stage, resized to cover
the stage's size and centre-cropped. Decoding and validating the image is `pipeline.generation.image`.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

CONDITIONING_CRF = 33


def h264_round_trip(frame: np.ndarray, crf: int = CONDITIONING_CRF) -> np.ndarray:
    """Compress one RGB frame with libx264 at `crf` (preset veryfast, yuv420p) and decode it back.

    As the reference, odd edges are dropped first (4:2:0 needs even sides). Runs in-process on
    PyAV's libavcodec: no subprocess per job, and the same conversions the reference uses.
    """
    import av  # deferred: only this round trip needs PyAV (image_crf 0 runs without it, as on a bare GPU image)

    frame = np.ascontiguousarray(frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = frame.shape[:2]
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(picture))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = next(container.decode(video=0))
        return decoded.to_ndarray(format="rgb24")


def prepare_start_frame(image: Image.Image, crf: int | None = CONDITIONING_CRF) -> np.ndarray:
    """The start image as the model saw such frames in training: uint8 HxWx3, H.264 round-tripped.

    Done once per job on the source image; each stage then resizes it (`condition_pixels`).
    """
    frame = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return h264_round_trip(frame, crf) if crf else frame


def condition_pixels(frame: np.ndarray, width: int, height: int) -> torch.Tensor:
    """Resize to cover (width, height), centre-crop, scale to [-1, 1]: (1, 3, 1, height, width) float32.

    Bilinear without antialiasing on float pixels, as the reference's resize_and_center_crop;
    sides are rounded up so the crop never comes up short.
    """
    pixels = torch.from_numpy(np.array(frame, dtype=np.float32)).permute(2, 0, 1)[None]
    src_h, src_w = frame.shape[:2]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    pixels = torch.nn.functional.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    pixels = pixels[:, :, top : top + height, left : left + width]
    return (pixels / 127.5 - 1.0)[:, :, None]
