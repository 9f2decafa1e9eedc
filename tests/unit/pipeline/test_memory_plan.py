"""The memory planner: plan per VRAM size, per-request estimates and refusals (pure arithmetic)."""

from __future__ import annotations

import pytest

from pipeline.geometry import job_geometry
from pipeline.placement import plan as mp
from pipeline.placement.plan import (
    GiB,
    PlanError,
    RequestTooLarge,
    check_request,
    choose_plan,
    estimate,
    max_frames_that_fit,
    needs_vae_tiling,
    resolve_plan,
    summary,
    usable_vram,
)

H100_TOTAL = 85_031_714_816  # torch.cuda.get_device_properties(0).total_memory on an H100 80GB


@pytest.mark.parametrize(
    ("vram_gib", "plan"),
    [(24, "offload"), (48, "fp8"), (80, "encoder-offload"), (96, "resident"), (141, "resident")],
)
def test_plan_per_card_size(vram_gib, plan):
    assert choose_plan(vram_gib * GiB) == plan


def test_a_real_h100_gets_encoder_offload():
    assert choose_plan(H100_TOTAL) == "encoder-offload"


def test_too_small_a_card_is_refused_with_a_reason():
    with pytest.raises(PlanError, match="cannot run LTX-2.3 under any plan"):
        choose_plan(8 * GiB)


def test_plan_override_and_validation():
    assert resolve_plan("offload", 141 * GiB) == "offload"  # --plan wins over the automatic choice
    assert resolve_plan("auto", 141 * GiB) == "resident"
    assert resolve_plan(None, 48 * GiB) == "fp8"
    with pytest.raises(PlanError, match="unknown plan 'fast'"):
        resolve_plan("fast", 80 * GiB)


def test_weights_per_plan_shrink_in_order():
    shape = job_geometry(1024, 576, 121)
    weights = [estimate(plan, shape).weights for plan in mp.PLANS]
    assert weights == sorted(weights, reverse=True)
    resident = estimate("resident", shape).weights / GiB
    assert 66 < resident < 68  # ≈ 71.5 GB of bf16 weights (reference: "≈ 71 GB all resident")
    # encoder-offload: Gemma (≈ 24.4 GB) leaves the GPU and lives in host RAM instead.
    eo = estimate("encoder-offload", shape)
    assert (resident - eo.weights / GiB) == pytest.approx(mp.TEXT_ENCODER_PARAMS * 2 / GiB, rel=1e-6)
    assert eo.host_ram == mp.TEXT_ENCODER_PARAMS * 2
    # fp8 halves the transformer's blocks; offload keeps only two blocks on the GPU.
    assert estimate("fp8", shape).weights / GiB < 30
    assert estimate("offload", shape).weights / GiB < 10
    assert estimate("offload", shape).host_ram / GiB > 60


def test_estimate_grows_with_frames_and_resolution():
    peaks = [estimate("fp8", job_geometry(1024, 1024, n)).peak for n in (121, 241, 481)]
    assert peaks[0] < peaks[1] < peaks[2]
    assert estimate("fp8", job_geometry(1024, 1024, 241)).peak > estimate("fp8", job_geometry(1024, 576, 241)).peak
    est = estimate("fp8", job_geometry(1024, 1024, 481))
    assert est.peak_phase == "denoise"


def test_token_geometry_matches_the_reference():
    # 6,144 video tokens at 768x512x121; 24,576 at 1536x1024x121 (reference facts).
    assert job_geometry(768, 512, 121).video_tokens() == 6_144
    assert job_geometry(1536, 1024, 121).video_tokens() == 24_576
    assert job_geometry(1536, 1024, 121).video_tokens(stage=1) == 6_144
    assert job_geometry(1024, 576, 120).generated_frames == 121
    assert job_geometry(1024, 576, 121, fps=24).audio_latent_frames == 126  # ≈ 126 audio tokens per 5 s


def test_frames_are_split_into_tiles_above_512_px_as_the_reference_tiling_does():
    assert not needs_vae_tiling(512, 512)
    assert not needs_vae_tiling(512, 384)
    assert needs_vae_tiling(768, 512)
    assert needs_vae_tiling(576, 1024)
    big = job_geometry(1536, 1024, 121)
    assert estimate("resident", big).vae_tiling
    assert estimate("resident", big, vae_tiling=True).phases["decode"] < estimate(
        "resident", big, vae_tiling=False
    ).phases["decode"]



@pytest.mark.parametrize(("width", "height", "frames"), [(1536, 1024, 481), (1024, 576, 121), (512, 512, 9)])
def test_the_decode_estimate_covers_the_runtimes_largest_tile_group(width, height, frames):
    from pipeline.generation.decode import plan_tiles

    shape = job_geometry(width, height, frames)
    groups = plan_tiles(shape.latent_frames, height // 32, width // 32)
    longest = max(tile.pixels[0].stop - tile.pixels[0].start for group in groups for tile in group)
    widest = max(s.stop - s.start for group in groups for tile in group for s in tile.pixels[1:])
    assert longest <= min(mp.DECODE_GROUP_FRAMES, shape.generated_frames) and widest <= mp.VAE_TILE
    assert longest == mp.DECODE_GROUP_FRAMES or frames < mp.DECODE_GROUP_FRAMES
    assert needs_vae_tiling(width, height) == any(len(group) > 1 for group in groups)


@pytest.mark.parametrize(
    ("plan", "vram_gib", "shape", "ok"),
    [
        ("resident", 141, job_geometry(1024, 1024, 481), True),
        ("encoder-offload", 80, job_geometry(1024, 1024, 481), True),
        ("encoder-offload", 80, job_geometry(2048, 2048, 481), False),
        ("fp8", 48, job_geometry(1024, 576, 481), True),
        ("fp8", 48, job_geometry(1024, 1024, 481), False),
        ("offload", 24, job_geometry(1024, 576, 241), True),
        ("offload", 24, job_geometry(1536, 1024, 481), False),
        ("resident", 80, job_geometry(1024, 1024, 241), False),  # forced resident on 80 GB: too tight
    ],
)
def test_requests_that_fit_and_requests_refused(plan, vram_gib, shape, ok):
    if ok:
        assert check_request(plan, shape, vram_gib * GiB).peak <= usable_vram(vram_gib * GiB)
    else:
        with pytest.raises(RequestTooLarge) as info:
            check_request(plan, shape, vram_gib * GiB)
        message = str(info.value)
        assert shape.label() in message and plan in message and "GiB" in message


def test_refusal_says_what_would_fit():
    with pytest.raises(RequestTooLarge, match=r"up to (\d+) frames fit") as info:
        check_request("fp8", job_geometry(1024, 1024, 481), 48 * GiB)
    frames = int(info.value.args[0].rsplit("up to ", 1)[1].split()[0])
    assert (frames - 1) % 8 == 0 and 241 <= frames < 481
    check_request("fp8", job_geometry(1024, 1024, frames), 48 * GiB)  # the suggestion itself fits
    assert max_frames_that_fit("offload", 2048, 2048, 24 * GiB) < 121


def test_summary_lists_the_plan_and_verdicts():
    text = summary("encoder-offload", H100_TOTAL)
    assert text.startswith("memory plan encoder-offload")
    assert "host RAM" in text and "fits" in text


def test_component_sizes_match_the_real_configs():
    from pipeline.weights.registry import meta_module, param_count

    assert param_count(meta_module("transformer")) == mp.TRANSFORMER_PARAMS
    assert param_count(meta_module("connectors")) == mp.CONNECTORS_PARAMS
    assert param_count(meta_module("text_encoder")) == mp.TEXT_ENCODER_PARAMS
    assert param_count(meta_module("vae")) == mp.VAE_PARAMS
    blocks = meta_module("transformer").transformer_blocks
    assert len(blocks) == mp.TRANSFORMER_LAYERS
    assert sum(p.numel() for p in blocks.parameters()) == mp.TRANSFORMER_BLOCK_PARAMS


def test_text_encoder_parts_match_gemma():
    from pipeline.placement.apply import language_model
    from pipeline.weights.registry import meta_module, param_count

    gemma = meta_module("text_encoder")
    lm = language_model(gemma)
    assert param_count(lm) == mp.TEXT_LANGUAGE_PARAMS
    assert lm.embed_tokens.weight.numel() == mp.TEXT_EMBED_PARAMS
    assert param_count(lm.layers[0]) == mp.TEXT_LAYER_PARAMS and len(lm.layers) == mp.TEXT_ENCODER_LAYERS
    connectors = meta_module("connectors")
    assert connectors.video_text_proj_in.weight.numel() + 4096 == mp.CONNECTOR_LARGEST_LEAF_PARAMS
