"""The start image: decoding, orientation, cover-crop to a stage's size and the H.264 round trip.

The reference conditions on a start image that looks like a video frame: resized to cover the
target, centre-cropped, then compressed once with H.264 at CRF 33 (the model was trained on
such frames). That round trip runs through the bundled ffmpeg, like the MP4 writer.
"""

from __future__ import annotations

import io
import subprocess

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CONDITIONING_CRF = 33
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
# Decompression-bomb guard: 50 megapixels is far above any useful start image.
MAX_IMAGE_PIXELS = 50_000_000


class StartImageError(ValueError):
    """The start image cannot be used; the message says why, in one sentence."""


def decode_start_image(data: bytes) -> Image.Image:
    """Decode PNG/JPEG/WebP bytes into an RGB image with its EXIF orientation applied."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ACCEPTED_FORMATS:
                raise StartImageError(
                    f"input_image is {probe.format or 'an unknown format'}; use PNG, JPEG or WebP"
                )
            width, height = probe.size
            if width * height > MAX_IMAGE_PIXELS:
                raise StartImageError(
                    f"input_image is {width}x{height}, above the {MAX_IMAGE_PIXELS // 1_000_000} megapixel limit"
                )
            probe.load()
            image = ImageOps.exif_transpose(probe)
            return image.convert("RGB")
    except StartImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise StartImageError(f"input_image could not be decoded as an image ({exc})") from None


def cover_crop(image: Image.Image, width: int, height: int) -> np.ndarray:
    """Resize to cover (width, height) keeping the aspect ratio, centre-crop; uint8 HxWx3."""
    scale = max(width / image.width, height / image.height)
    resized_w = max(width, round(image.width * scale))
    resized_h = max(height, round(image.height * scale))
    resized = image.resize((resized_w, resized_h), Image.Resampling.BILINEAR)
    left, top = (resized_w - width) // 2, (resized_h - height) // 2
    cropped = resized.crop((left, top, left + width, top + height))
    return np.asarray(cropped, dtype=np.uint8)


def h264_round_trip(frame: np.ndarray, crf: int = CONDITIONING_CRF) -> np.ndarray:
    """Compress one RGB frame with libx264 at `crf` and decode it back (same shape, uint8)."""
    height, width, _ = frame.shape
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    encode = [
        ffmpeg, "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-i", "pipe:0", "-frames:v", "1", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
        "-pix_fmt", "yuv420p", "-threads", "1", "-f", "h264", "pipe:1",
    ]
    encoded = subprocess.run(encode, input=np.ascontiguousarray(frame).tobytes(), capture_output=True, check=True)
    decode = [
        ffmpeg, "-loglevel", "error", "-f", "h264", "-i", "pipe:0", "-frames:v", "1",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-threads", "1", "pipe:1",
    ]
    decoded = subprocess.run(decode, input=encoded.stdout, capture_output=True, check=True)
    return np.frombuffer(decoded.stdout, dtype=np.uint8).reshape(height, width, 3).copy()


def prepare_condition_frame(image: Image.Image, width: int, height: int, crf: int | None) -> np.ndarray:
    """The conditioning frame for one stage: cover-crop, then the H.264 round trip unless crf is None/0."""
    frame = cover_crop(image, width, height)
    return h264_round_trip(frame, crf) if crf else frame
