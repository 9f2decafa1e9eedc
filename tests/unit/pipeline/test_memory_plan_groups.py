"""The memory planner for a job split over N GPUs (issue 12), and the split arithmetic (pure)."""

from __future__ import annotations

import pytest

from pipeline.engine import Capacity, admit, memory_plan
from pipeline.geometry import job_geometry
from pipeline.params import GenerationParams
from pipeline.placement import plan as mp
from pipeline.placement.parallel import check_degree, split_sizes, ulysses_mode
from pipeline.placement.plan import (
    GROUP_PLANS,
    GiB,
    PlanError,
    RequestTooLarge,
    check_request,
    choose_plan,
    estimate,
    resolve_plan,
    summary,
    usable_vram,
)

LONG = job_geometry(1536, 1024, 481)  # 48 x 32 x 61 = 93,696 video tokens at stage 2


def test_weights_are_replicated_and_denoise_activations_divide():
    one = estimate("fp8", LONG)
    for ranks in (2, 4, 8):
        split = estimate("fp8", LONG, ranks=ranks)
        assert split.weights == one.weights  # every GPU holds the whole transformer
        assert split.phases["encode"] == one.phases["encode"]  # rank 0 still runs Gemma
        assert split.phases["decode"] == one.phases["decode"]  # and the decoder
        # the video activations divide (plus Ulysses' buffers on the share); the audio does not
        audio = LONG.audio_latent_frames * mp.AUDIO_WIDTH * mp.BF16 * mp.TRANSFORMER_ACTIVATION_WIDTHS
        video_one = one.phases["denoise"] - audio
        widths = (mp.TRANSFORMER_ACTIVATION_WIDTHS + mp.ULYSSES_WIDTHS) / mp.TRANSFORMER_ACTIVATION_WIDTHS
        assert split.phases["denoise"] - audio == pytest.approx(video_one * widths / ranks, rel=1e-3)
    assert estimate("fp8", LONG, ranks=8).phases["denoise"] < estimate("fp8", LONG, ranks=4).phases["denoise"]


@pytest.mark.parametrize(
    ("vram_gib", "plan", "ranks", "fits"),
    [
        (48, "fp8", 1, False),  # an L40S cannot hold 1536x1024x481 under fp8 ...
        (48, "fp8", 2, False),
        (48, "fp8", 4, True),  # ... four of them can
        (80, "resident", 1, False),  # an H100 cannot keep everything resident for it ...
        (80, "resident", 4, False),
        (80, "resident", 8, True),  # ... eight can
        (141, "resident", 1, True),  # an H200 can, alone
        (24, "fp8", 8, False),  # 24 GB cards: the replicated fp8 weights alone do not fit
    ],
)
def test_long_job_fits_per_gpu_count(vram_gib, plan, ranks, fits):
    peak = estimate(plan, LONG, ranks=ranks).peak
    assert (peak <= usable_vram(vram_gib * GiB)) is fits


def test_block_offload_does_not_combine_with_a_split():
    assert "offload" not in GROUP_PLANS
    with pytest.raises(PlanError, match="cannot be combined"):
        estimate("offload", LONG, ranks=2)
    with pytest.raises(PlanError, match="gpus-per-job 2"):
        resolve_plan("offload", 24 * GiB, ranks=2)
    assert resolve_plan("offload", 24 * GiB) == "offload"  # alone it is still the 24 GB plan


@pytest.mark.parametrize(
    ("vram_gib", "alone", "in_four"),
    # An 80 GB card alone must swap Gemma out for the design request's activations; with the
    # activations split four ways everything stays resident.
    [(48, "fp8", "fp8"), (80, "encoder-offload", "resident"), (141, "resident", "resident")],
)
def test_auto_plan_for_a_group(vram_gib, alone, in_four):
    assert choose_plan(vram_gib * GiB) == alone
    assert choose_plan(vram_gib * GiB, ranks=4) == in_four


def test_a_24gb_group_is_refused_with_the_reason():
    with pytest.raises(PlanError, match="block offload does not combine"):
        choose_plan(24 * GiB, ranks=4)


def test_admission_with_a_group_accepts_what_one_gpu_refuses():
    request = GenerationParams(prompt="p", resolution="1536x1024", num_frames=481)
    with pytest.raises(RequestTooLarge):
        admit(request, (1536, 1024), Capacity("fp8", 48 * GiB))
    admit(request, (1536, 1024), Capacity("fp8", 48 * GiB, ranks=4))
    with pytest.raises(RequestTooLarge, match="up to"):
        check_request("fp8", LONG, 48 * GiB, ranks=2)


def test_memory_plan_and_summary_name_the_split():
    plan = memory_plan("auto", 80 * GiB, ranks=8)
    assert plan.plan == "resident" and plan.ranks == 8 and plan.capacity.ranks == 8
    text = summary("fp8", 48 * GiB, ranks=4)
    assert "split over 4 GPUs" in text and "1536x1024" in text


@pytest.mark.parametrize(
    ("tokens", "ranks", "sizes"),
    [(24, 2, [12, 12]), (27, 2, [14, 13]), (93_696, 8, [11_712] * 8), (10, 4, [3, 3, 2, 2])],
)
def test_split_sizes_follow_tensor_split(tokens, ranks, sizes):
    assert split_sizes(tokens, ranks) == sizes and sum(sizes) == tokens


@pytest.mark.parametrize(
    ("tokens", "heads", "ranks", "mode"),
    [
        (93_696, (32, 32), 8, "ulysses"),  # 1536x1024x481, stage 2: divides
        (24_576, (32, 32), 4, "ulysses"),
        (27, (2, 2), 2, "ulysses-anything"),  # tokens do not divide
        (24, (32, 32), 3, "ulysses-anything"),  # 32 heads over 3 ranks
    ],
)
def test_ulysses_mode_per_pass(tokens, heads, ranks, mode):
    assert ulysses_mode(tokens, heads, ranks) == mode


def test_degree_needs_a_head_per_rank():
    check_degree((32, 32), 8)
    check_degree((32, 32), 32)
    with pytest.raises(ValueError, match="2 attention heads"):
        check_degree((2, 2), 4)  # the tiny model: 2 heads, so at most 2 ranks
    with pytest.raises(ValueError, match="at least 2 ranks"):
        check_degree((32, 32), 1)
