"""The memory planner: plan per VRAM size, per-request estimates and refusals (pure arithmetic)."""

from __future__ import annotations

import json

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
    usable_host_ram,
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
    # host: the text tower pinned (each tensor rounded up to a power of two) + the vision tower pageable
    assert eo.host_ram == mp.PINNED_TEXT_LANGUAGE_BYTES + (mp.TEXT_ENCODER_PARAMS - mp.TEXT_LANGUAGE_PARAMS) * 2
    assert eo.host_ram > mp.TEXT_ENCODER_PARAMS * 2
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


# ---- host RAM (issue 15: pinned rounding counted, physical RAM checked before a plan is chosen) ----


def _pinned_bytes(modules) -> int:
    """What pinning these modules' tensors one by one takes: each bf16 tensor rounded up to a power of two."""
    seen, total = set(), 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += 1 << (tensor.numel() * 2 - 1).bit_length()
    return total


def test_pinned_host_bytes_match_the_real_configs_rounded_per_tensor():
    from pipeline.placement.apply import language_model
    from pipeline.weights.registry import meta_module

    transformer, connectors = meta_module("transformer"), meta_module("connectors")
    lm = language_model(meta_module("text_encoder"))
    assert _pinned_bytes([transformer.transformer_blocks]) == mp.PINNED_TRANSFORMER_BLOCKS_BYTES
    assert _pinned_bytes([connectors]) == mp.PINNED_CONNECTORS_BYTES
    assert _pinned_bytes([lm]) == mp.PINNED_TEXT_LANGUAGE_BYTES
    assert _pinned_bytes(list(lm.layers)) == mp.PINNED_TEXT_LAYERS_BYTES
    # The rounding is not negligible: connectors 6.8 vs 5.9 GiB raw, Gemma's text tower 24.5 vs 21.9.
    assert mp.PINNED_CONNECTORS_BYTES / (mp.CONNECTORS_PARAMS * 2) > 1.14
    assert mp.PINNED_TEXT_LANGUAGE_BYTES / (mp.TEXT_LANGUAGE_PARAMS * 2) > 1.11
    biggest = max(p.numel() * 2 for p in transformer.transformer_blocks.parameters())
    assert biggest == mp.LARGEST_BLOCK_TENSOR_BYTES


def test_offload_host_ram_counts_the_rounding_and_stays_under_the_old_double_pinned_peak():
    est = estimate("offload", job_geometry(1024, 576, 121))
    raw = (mp.TRANSFORMER_BLOCK_PARAMS + mp.CONNECTORS_PARAMS + mp.TEXT_ENCODER_PARAMS) * 2
    assert est.host_ram > raw  # the pinned rounding is counted
    assert 64 < est.host_ram / GiB < 66  # blocks 34.6 + connectors 6.8 + Gemma's layers 22.5 + vision 0.8
    # Pinned block by block: the load holds one tensor's pageable copy, not a second transformer.
    assert est.host_load_extra == mp.LARGEST_BLOCK_TENSOR_BYTES and est.host_peak / GiB < 66


@pytest.mark.parametrize(
    ("vram_gib", "host_gib", "plan"),
    [
        (24, 128, "offload"),
        (48, 64, "fp8"),  # Gemma's layers pinned + the fp8 cast on the host: ≈ 41 GiB
        (80, 48, "encoder-offload"),  # the text tower pinned: ≈ 25 GiB
        # Too little host RAM to hold Gemma's pinned tower: rather than refuse, keep everything on the
        # 80 GB card; the design request no longer fits, smaller ones do and the rest are refused one by one.
        (80, 32, "resident"),
        (141, 16, "resident"),  # resident needs no host RAM for weights
    ],
)
def test_the_plan_chosen_for_a_card_and_a_host(vram_gib, host_gib, plan):
    assert choose_plan(vram_gib * GiB, host_ram_bytes=host_gib * GiB) == plan
    if (vram_gib, host_gib) == (80, 32):
        check_request("resident", job_geometry(1024, 576, 121), 80 * GiB)
        with pytest.raises(RequestTooLarge):
            check_request("resident", job_geometry(*mp.DESIGN_REQUEST), 80 * GiB)


def test_a_64_gb_desktop_with_a_24_gb_card_is_refused_at_start_not_at_load():
    """The offload plan pins ≈ 65 GiB: a 64 GB host would fail at load and crash-loop under the supervisor."""
    with pytest.raises(PlanError, match=r"plan 'offload' needs ≈ 6\d\.\d GiB of host RAM.*64\.0 GiB"):
        choose_plan(24 * GiB, host_ram_bytes=64 * GiB)
    assert choose_plan(24 * GiB, host_ram_bytes=96 * GiB) == "offload"
    assert choose_plan(24 * GiB) == "offload"  # host not given: not checked (a stated card)


def test_a_requested_plan_is_checked_against_the_host_too():
    assert resolve_plan("offload", 24 * GiB, host_ram_bytes=128 * GiB) == "offload"
    with pytest.raises(PlanError, match="plan 'encoder-offload' needs"):
        resolve_plan("encoder-offload", 80 * GiB, host_ram_bytes=24 * GiB)
    assert resolve_plan("resident", 141 * GiB, host_ram_bytes=8 * GiB) == "resident"


def test_usable_host_ram_keeps_a_reserve():
    assert usable_host_ram(64 * GiB) == pytest.approx((64 - 6 - 3.2) * GiB, rel=1e-9)


# ---- regional compile per plan (issue 15: --compile with fp8 / offload failed every job) ----


def test_regional_compile_is_possible_only_where_the_transformer_is_plain_bf16():
    assert mp.spec("resident").compile_blocker is None
    assert mp.spec("encoder-offload").compile_blocker is None
    assert "fp8" in mp.spec("fp8").compile_blocker
    assert "offload" in mp.spec("offload").compile_blocker


# ---- calibration from a GPU's measured peaks ----


def test_the_planner_reads_a_calibration_file(tmp_path):
    path = tmp_path / "calibration.json"
    assert mp.load_calibration(path) == mp.Calibration()  # absent: the defaults
    assert mp.Calibration().source == "estimate"
    path.write_text(json.dumps({"device": "NVIDIA H200", "date": "2026-12-06", "activation_widths": 45.5,
                                "encode_extra_bytes": 3 * GiB, "peaks": []}))
    cal = mp.load_calibration(path)
    assert cal.activation_widths == 45.5 and cal.encode_extra_bytes == 3 * GiB
    assert cal.decode_bytes_per_pixel == mp.DECODE_BYTES_PER_PIXEL  # not in the file: default kept
    assert "NVIDIA H200" in cal.source and "2026-12-06" in cal.source
    shape = job_geometry(1024, 1024, 481)
    default, calibrated = estimate("fp8", shape, calibration=mp.Calibration()), estimate("fp8", shape, calibration=cal)
    ratio = 45.5 / mp.TRANSFORMER_ACTIVATION_WIDTHS
    assert calibrated.phases["denoise"] == pytest.approx(default.phases["denoise"] * ratio, rel=1e-6)
    assert calibrated.phases["encode"] - default.phases["encode"] == 3 * GiB - mp.ENCODE_EXTRA_BYTES
    assert calibrated.peak > default.peak


@pytest.mark.parametrize("text", ["{not json", '{"activation_widths": -1}', '{"activation_widths": "wide"}', "{}"])
def test_a_malformed_calibration_file_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "calibration.json"
    path.write_text(text)
    with pytest.raises(PlanError, match="calibration.json"):
        mp.load_calibration(path)


def test_no_calibration_is_checked_in_until_a_gpu_has_measured_one():
    # The default the server uses: the file when a GPU run recorded one, else the CPU-measured constants.
    assert mp.load_calibration() == mp.CALIBRATION
    assert (mp.CALIBRATION.source == "estimate") == (not mp.CALIBRATION_FILE.exists())


def test_the_hosts_memory_is_the_machines_or_its_containers_limit(tmp_path):
    from pipeline.placement.host import physical_memory_bytes

    machine = physical_memory_bytes(())
    assert machine is not None and machine > GiB
    unlimited, limited = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    unlimited.write_text("max\n")
    limited.write_text(f"{8 * GiB}\n")
    assert physical_memory_bytes((unlimited,)) == machine
    assert physical_memory_bytes((unlimited, limited)) == min(machine, 8 * GiB)
    assert physical_memory_bytes((tmp_path / "absent",)) == machine


@pytest.mark.parametrize(("width", "height"), [(768, 512), (1536, 1024), (1024, 576), (576, 1024), (512, 512),
                                                (2048, 2048), (1024, 768), (256, 2048)])
def test_the_planners_decode_tile_is_the_runtimes(width, height):
    from pipeline.generation.decode import spatial_intervals

    shape = job_geometry(width, height, 121)
    rows, cols = spatial_intervals(height // 32, width // 32)
    tallest = max(e - s for s, e in zip(rows.starts, rows.ends, strict=True)) * 32
    widest = max(e - s for s, e in zip(cols.starts, cols.ends, strict=True)) * 32
    assert (mp._tile_pixels(height, shape), mp._tile_pixels(width, shape)) == (tallest, widest)
