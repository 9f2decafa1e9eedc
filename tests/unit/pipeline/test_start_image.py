"""Start image decoding, orientation, cover-crop and the H.264 round trip."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import StartImageError
from pipeline.generation.conditioning import condition_pixels, h264_round_trip, prepare_start_frame
from pipeline.generation.image import decode_start_image
from sample_media import png_bytes


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_decode_to_rgb(fmt):
    image = decode_start_image(png_bytes(40, 30, fmt=fmt))
    assert image.mode == "RGB" and image.size == (40, 30)


def test_rgba_and_palette_become_rgb():
    assert decode_start_image(png_bytes(8, 8, mode="RGBA")).mode == "RGB"
    assert decode_start_image(png_bytes(8, 8, mode="P")).mode == "RGB"


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert decode_start_image(buffer.getvalue()).size == (20, 40)


def test_other_formats_are_refused_with_a_sentence():
    with pytest.raises(StartImageError, match="GIF; use PNG, JPEG or WebP"):
        decode_start_image(png_bytes(8, 8, mode="P", fmt="GIF"))


def test_garbage_is_refused():
    with pytest.raises(StartImageError, match="could not be decoded"):
        decode_start_image(b"definitely not an image")


def test_truncated_image_is_refused():
    with pytest.raises(StartImageError, match="could not be decoded"):
        decode_start_image(png_bytes(64, 64)[:200])


def test_condition_pixels_cover_and_centre():
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 100:200] = 255  # a white centre third
    tensor = condition_pixels(pixels, 64, 64)
    assert tensor.shape == (1, 3, 1, 64, 64) and tensor.dtype == torch.float32
    assert float(tensor.min()) >= -1.0 and float(tensor.max()) <= 1.0
    assert float(tensor[..., 8:56].mean()) > 0.95  # the white centre fills the square crop
    wide = condition_pixels(pixels, 128, 32)
    assert wide.shape == (1, 3, 1, 32, 128)
    assert float(wide[..., :30].mean()) < -0.95  # the black left third is kept at this aspect


def test_upscaling_never_comes_up_short():
    tensor = condition_pixels(np.full((7, 5, 3), 128, np.uint8), 1024, 576)
    assert tensor.shape == (1, 3, 1, 576, 1024)
    assert torch.allclose(tensor, torch.full_like(tensor, 128 / 127.5 - 1), atol=1e-6)


def test_start_frame_round_trip_is_switchable_and_drops_odd_edges():
    image = Image.fromarray((np.random.default_rng(1).random((33, 51, 3)) * 255).astype(np.uint8))
    assert prepare_start_frame(image, crf=None).shape == (33, 51, 3)
    assert prepare_start_frame(image).shape == (32, 50, 3)


def test_h264_round_trip_compresses_but_keeps_the_picture():
    frame = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    smooth = np.broadcast_to(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], (64, 96, 3)).copy()
    noisy_out, smooth_out = h264_round_trip(frame), h264_round_trip(smooth)
    assert noisy_out.shape == frame.shape and noisy_out.dtype == np.uint8
    assert not np.array_equal(noisy_out, frame)  # CRF 33 is lossy
    assert np.abs(smooth_out.astype(int) - smooth).mean() < 4  # but a smooth picture survives
