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


@pytest.fixture(scope="module")
def keyframe_pngs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keyframes")
    end, middle = folder / "end.png", folder / "middle.png"
    end.write_bytes(start_image_png(260, 200, seed=9, flip=True))
    middle.write_bytes(start_image_png(200, 240, seed=13))
    return end, middle


@pytest.mark.slow
@pytest.mark.parametrize("case", ["end frame", "middle keyframe"])
def test_keyframed_two_stage_job(sides, start_png, keyframe_pngs, case):
    """ltx-pipelines' `images` beyond frame 0: appended keyframe tokens in both stages, dropped before decoding."""
    from comparisons import JOB

    end, middle = keyframe_pngs
    last = JOB["num_frames"] - 1
    keyframes = ((end, last, 1.0),) if case == "end frame" else ((middle, 8, 0.8), (end, last, 0.6))
    pairs = compare_job(sides, start_png, 0.9, keyframes, tag=case)
    ours, ref = pairs.pop(f"{case}: decoded frames (uint8)")
    ours_decode, ref_decode = pairs.pop(f"{case}: frames, reference decode of our latent (uint8)")
    assert_parity(pairs)
    assert torch.equal(ours_decode, ref_decode)
    assert ours.shape == ref.shape and (ours - ref).abs().max() <= 1


def test_negative_control_keyframe_at_the_wrong_frame_is_caught(sides, start_png, keyframe_pngs):
    """The keyframe's position matters: the same end image placed one frame early must fail the comparison."""
    from comparisons import JOB, our_job, prompt_text, reference_job

    end, _ = keyframe_pngs
    last = JOB["num_frames"] - 1
    ref = reference_job(sides, start_png, 0.9, prompt_text(sides), ((end, last, 1.0),))
    ours = our_job(sides, start_png, 0.9, ((end, last - 1, 1.0),))
    assert relative_error(ours.video, ref.video) > 100 * TOLERANCE


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_end_frame_tokens_hold_the_end_image_latent_at_strength_one(sides, start_png, keyframe_pngs, strength):
    """At strength 1.0 the end frame's tokens (positioned at the last delivered frame) stay exactly the
    end image's latent through all 11 steps; at 0.5 the model moves them. The reference conditions
    this way (a guide attended to, not a replaced latent frame), so this is the frame's strongest pin."""
    from comparisons import JOB, PROMPT, prompt_text
    from pipeline.generation.conditioning import prepare_start_frame
    from pipeline.generation.image import decode_start_image
    from pipeline.generation.schedule import pack_video
    from pipeline.params import GenerationParams

    end, _ = keyframe_pngs
    prompt_text(sides)
    last = JOB["num_frames"] - 1
    request = GenerationParams(prompt=PROMPT, num_frames=JOB["num_frames"],
                               resolution=f"{JOB['width']}x{JOB['height']}", image_strength=0.9, seed=JOB["seed"],
                               keyframes=[{"frame_index": last, "strength": strength}])
    with torch.inference_mode():
        result = sides.ours.denoise(request, start_png.read_bytes(), JOB["seed"], keyframe_images=[end.read_bytes()])
        frame = prepare_start_frame(decode_start_image(end.read_bytes()))
        expected = pack_video(sides.ours.encode_image(frame, JOB["width"], JOB["height"]))
    assert result.keyframe_tokens.shape == expected.shape
    if strength == 1.0:
        assert torch.equal(result.keyframe_tokens, expected)
    else:
        assert relative_error(result.keyframe_tokens, expected) > 1e-2
    # Positions: the appended tokens sit at the last delivered frame, [16, 24) / fps in time.
    coords = sides.ours._coords(result.geometry.latent_shape(2), 1, float(JOB["fps"]), (last,))[0]
    cells = result.video.shape[3] * result.video.shape[4]
    assert torch.allclose(coords[0, 0, -cells:], torch.tensor([last, last + 8]) / JOB["fps"])


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ltx_reference import build_reference_lora

    folder = tmp_path_factory.mktemp("loras")
    build_reference_lora(folder / "style.safetensors", rank=4, seed=21)
    build_reference_lora(folder / "motion.safetensors", rank=2, seed=22, every=3)
    return folder


@pytest.mark.parametrize("loras", [[("style", 1.0)], [("style", 0.6), ("motion", -1.5)]])
def test_lora_transformer_pass_matches_ltx_core_fusion(sides, lora_dir, loras):
    """Our unfused adapter hooks vs ltx-core's `apply_loras` (W + (B * strength) @ A), one pass."""
    from comparisons import compare_lora_pass, compare_transformer_pass

    pairs = compare_lora_pass(sides, lora_dir, loras)
    assert_parity(pairs)
    # The LoRA matters: the base model's velocity is far from the adapted one.
    base, _ = compare_transformer_pass(sides, strength=0.7)["video velocity"]
    assert relative_error(base, pairs["LoRA pass: video velocity"][1]) > 100 * TOLERANCE


@pytest.mark.slow
def test_whole_job_with_a_lora(sides, start_png, lora_dir):
    from comparisons import lora_sides

    loras = [("style", 0.8)]
    with_lora = lora_sides(sides, lora_dir, loras)
    try:
        pairs = compare_job(with_lora, start_png, 0.9, tag="LoRA job", loras=tuple(loras))
    finally:
        sides.ours.adapters.use([])
    pairs.pop("LoRA job: decoded frames (uint8)")
    ours_decode, ref_decode = pairs.pop("LoRA job: frames, reference decode of our latent (uint8)")
    assert_parity(pairs)
    assert torch.equal(ours_decode, ref_decode)


def test_prompt_enhancement_system_prompt_and_cleanup_are_ltx_cores():
    """The image-to-video system prompt (verbatim) and `clean_response` of ltx-core / ltx-pipelines."""
    import ltx_core.text_encoders.gemma.encoders.base_encoder as encoder
    from ltx_pipelines.utils.helpers import clean_response as reference_clean

    from pipeline.generation.enhance import I2V_SYSTEM_PROMPT, clean_response

    text = (Path(encoder.__file__).parent / "prompts" / "gemma_i2v_system_prompt.txt").read_text()
    assert text == I2V_SYSTEM_PROMPT
    for sample in ("\u201cStyle: real\u201d \u2014 a boat", "  ...: 12 a\u00a0boat\u2019s", "???"):
        assert clean_response(sample) == reference_clean(sample)
