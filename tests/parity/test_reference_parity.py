"""Parity with Lightricks' reference code (ltx-core / ltx-pipelines 1.0.0) on one tiny random checkpoint.

The checkpoint is built by ltx-core's configurators, saved as one safetensors file in the
official layout and loaded by both sides (ours through the official-checkpoint loader, with
every config derived from the file's metadata). Everything runs in float32 on the CPU on
identical inputs and noise. Goal: max relative error (max|ours - ref| / max|ref|) <= 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from comparisons import (
    Sides,
    compare_audio,
    compare_connectors,
    compare_job,
    compare_start_image,
    compare_transformer_pass,
    compare_upsampler,
    compare_vae,
    compare_vocoder_variant,
    load_sides,
    relative_error,
    start_image_png,
)

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Sides:
    return load_sides(tmp_path_factory.mktemp("reference-checkpoint"))


@pytest.fixture(scope="module")
def start_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("start") / "start.png"
    path.write_bytes(start_image_png())
    return path


def assert_parity(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], tolerance: float = TOLERANCE) -> None:
    for name, (ours, ref) in pairs.items():
        assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}"
        assert torch.isfinite(ref).all(), f"{name}: the reference is not finite"
        error = relative_error(ours, ref)
        assert error <= tolerance, f"{name}: relative error {error:.2e} > {tolerance:.0e}"


def test_text_connectors(sides):
    assert_parity(compare_connectors(sides))


def test_one_transformer_pass_with_a_conditioned_first_frame(sides):
    assert_parity(compare_transformer_pass(sides, strength=0.7))
    assert_parity(compare_transformer_pass(sides, strength=1.0))


def test_negative_control_unscaled_timesteps_are_caught(sides):
    """Giving the conditioned tokens the global timestep (diffusers' shortcut) must fail the comparison."""
    pairs = compare_transformer_pass(sides, strength=0.7, scale_timesteps=False)
    assert relative_error(*pairs["video velocity"]) > 100 * TOLERANCE


def test_video_vae_encode_and_decode(sides):
    assert_parity(compare_vae(sides))


def test_latent_upsampler(sides):
    assert_parity(compare_upsampler(sides))


def test_audio_decoder_and_vocoder_with_bandwidth_extension(sides):
    pairs = compare_audio(sides)
    assert_parity(pairs)
    ours, _ = pairs["vocoder + BWE (48 kHz)"]
    assert ours.abs().max() <= 1.0


def test_negative_control_vocoder_without_the_reference_clamp(sides):
    """diffusers' 2.3 conversion config (no final activation at 16 kHz) is caught by the comparison."""
    assert relative_error(*compare_vocoder_variant(sides, final_act_fn=None)) > 100 * TOLERANCE


def test_negative_control_decoder_padded_with_zeros(sides):
    """The decoder padding the metadata implies (reflect) matters: zeros is caught."""
    from comparisons import compare_vae_variant

    assert relative_error(*compare_vae_variant(sides, decoder_spatial_padding_mode="zeros")) > 100 * TOLERANCE


def test_start_image_pixels_and_latent(sides, start_png):
    assert_parity(compare_start_image(sides, start_png))


@pytest.mark.parametrize("strength", [1.0, 0.7, 0.0])
def test_whole_two_stage_distilled_job(sides, start_png, strength):
    pairs = compare_job(sides, start_png, strength)
    ours, ref = pairs.pop(f"job s={strength}: decoded frames (uint8)")
    ours_decode, ref_decode = pairs.pop(f"job s={strength}: frames, reference decode of our latent (uint8)")
    assert_parity(pairs)
    # The decode itself is exact: the reference's decode of our final latent gives our frames, bit for bit.
    assert torch.equal(ours_decode, ref_decode)
    # From the whole job, latents ~1e-7 apart flip the few values that sit on a uint8 boundary by one level.
    assert ours.shape == ref.shape and (ours - ref).abs().max() <= 1
    assert (ours != ref).float().mean() < 1e-4, f"{int((ours != ref).sum())} of {ours.numel()} values differ"
