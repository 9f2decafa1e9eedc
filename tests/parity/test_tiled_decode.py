"""Our tiled video decode vs ltx-core's `decode_video(latent, decoder, TilingConfig.default())`.

Both sides decode the same random latent of the tiny official checkpoint in float32 on the CPU:
the reference through its VideoDecoder (which de-normalizes internally), ours through the
diffusers VAE behind `pipeline.generation.decode.tiled_decode` (de-normalized first), and through the
runtime's `_video_frames`, as the MP4 gets them. The pixels agree bit for bit (measured: max
|diff| 0, every uint8 equal), so the test asserts uint8 equality and float agreement <= 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from comparisons import TILED_CASES as CASES
from comparisons import Sides, abs_error, latent, load_sides, our_decode, reference_decode, relative_error
from pipeline.generation.decode import decode_groups, tiled_decode

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Sides:
    return load_sides(tmp_path_factory.mktemp("reference-checkpoint"))


@pytest.mark.parametrize("case", list(CASES))
def test_decoded_frames_equal_the_reference(sides, case):
    z = latent(CASES[case], seed=11)
    with torch.inference_mode():
        ref_pixels, ref_frames = reference_decode(sides, z)
        pixels, frames, reports = our_decode(sides, z)
    assert pixels.shape == ref_pixels.shape
    assert torch.isfinite(ref_pixels).all()
    error = relative_error(pixels, ref_pixels)
    assert error <= TOLERANCE, f"{case}: relative error {error:.2e} (max abs {abs_error(pixels, ref_pixels):.2e})"
    assert frames.shape == ref_frames.shape and frames.dtype == ref_frames.dtype == torch.uint8
    assert torch.equal(frames, ref_frames), f"{case}: {int((frames != ref_frames).sum())} uint8 values differ"
    groups = decode_groups(*z.shape[2:])
    assert reports == [(i, groups) for i in range(1, groups + 1)]  # progress per temporal group
    # Negative control: diffusers' rounding conversion instead of the reference's truncation is caught.
    rounded = ((ref_pixels[0] / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0)
    assert (rounded != ref_frames).float().mean() > 0.1


def test_negative_control_an_untiled_decode_is_caught(sides):
    """The tiling changes the pixels (the decoder sees other context), so the comparison can tell."""
    z = latent(CASES["time only"], seed=11)
    vae = sides.ours.components.vae
    with torch.inference_mode():
        ref_pixels, _ = reference_decode(sides, z)
        whole = torch.cat(list(tiled_decode(lambda x: vae.decode(x, return_dict=False)[0],
                                            sides.ours._denormalize(z), None)), dim=2)
    assert relative_error(whole, ref_pixels) > 100 * TOLERANCE
