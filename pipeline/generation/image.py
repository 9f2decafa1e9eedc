"""Decoding a start image: accepted formats, the size limit, EXIF orientation. Pillow only.

No torch, no numpy: the API process validates every start image through `pipeline.engine.image_size`
before queueing, and must stay light.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import StartImageError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
# Decompression-bomb guard: 50 megapixels is far above any useful start image.
MAX_IMAGE_PIXELS = 50_000_000


def decode_start_image(data: bytes) -> Image.Image:
    """Decode PNG/JPEG/WebP bytes into an RGB image with its EXIF orientation applied."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ACCEPTED_FORMATS:
                raise StartImageError(
                    f"input_image is {probe.format or 'an unknown format'}; use PNG, JPEG or WebP"
                )
            frames = getattr(probe, "n_frames", 1)
            if frames > 1:  # which frame starts the video would be a guess: ask for a still
                raise StartImageError(f"input_image is an animated {probe.format} ({frames} frames); "
                                      "use a still image")
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
