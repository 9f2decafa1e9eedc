"""The reference's decode tiling, without a model: intervals, masks, weights, streaming, uint8."""

import numpy as np
import pytest
import torch

from pipeline.generation.decode import (
    REFERENCE_TILING,
    DecodeTiling,
    Intervals,
    blend_weight,
    decode_groups,
    plan_tiles,
    spatial_intervals,
    spatial_pixels,
    spatial_tile_size,
    split_causal,
    split_symmetric,
    temporal_intervals,
    temporal_pixels,
    tiled_decode,
    to_uint8_frames,
    trapezoid,
)
from pipeline.geometry import pixel_frames


def causal_decode(latents: torch.Tensor) -> torch.Tensor:
    """A stand-in decoder with the VAE's geometry: latent frame 0 -> 1 frame, others -> 8; cells -> 32 px.

    Every pixel is its latent cell's value, so a tile decodes to exactly the whole decode's pixels.
    """
    z = latents[:, :3]
    frames = torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(8, dim=2)], dim=2)
    return frames.repeat_interleave(32, dim=3).repeat_interleave(32, dim=4)


def test_symmetric_split_of_a_landscape_height():
    # 20 latent rows with the tile scaled to 13 (640 of 768 px): [0, 13) and [11, 20), 2 rows blended.
    assert split_symmetric(20, 13, 2) == Intervals((0, 11), (13, 20), (0, 2), (2, 0))
    assert split_symmetric(16, 16, 2) == Intervals((0,), (16,), (0,), (0,))


@pytest.mark.parametrize("length", [1, 2, 15, 16, 17, 30, 31, 45, 64, 100])
@pytest.mark.parametrize(("size", "overlap"), [(16, 2), (13, 2), (8, 3), (3, 2)])
def test_symmetric_tiles_cover_the_axis_and_overlap_by_their_ramps(length, size, overlap):
    split = split_symmetric(length, size, overlap)
    assert split.starts[0] == 0 and split.ends[-1] == length
    assert all(end - start <= size for start, end in zip(split.starts, split.ends, strict=True))
    for i in range(len(split) - 1):
        assert split.starts[i + 1] - split.starts[i] == size - overlap
        assert split.ends[i] - split.starts[i + 1] == overlap == split.right_ramps[i] == split.left_ramps[i + 1]
    assert split.left_ramps[0] == 0 and split.right_ramps[-1] == 0


def test_causal_split_shifts_later_tiles_back_one_frame():
    # ltx-core's own example (split_temporal_latents' docstring), size 24, overlap 8.
    assert split_causal(56, 24, 8) == Intervals((0, 15, 31), (24, 40, 56), (0, 9, 9), (8, 8, 0))
    assert split_causal(24, 24, 8) == Intervals((0,), (24,), (0,), (0,))


def test_temporal_intervals_of_the_default_tiling():
    # 64 frames with 24 overlap = 8 latent frames with 3; 129 frames = 17 latent frames.
    assert temporal_intervals(17) == Intervals((0, 4, 9), (8, 13, 17), (0, 4, 4), (3, 3, 0))
    assert temporal_intervals(8) == Intervals((0,), (8,), (0,), (0,))  # 57 frames: one group
    assert len(temporal_intervals(9)) == 2  # 65 frames already split
    assert [decode_groups(f, 4, 4) for f in (1, 8, 9, 16, 17, 61)] == [1, 1, 2, 3, 3, 12]
    assert decode_groups(61, 4, 4, None) == 1


def test_spatial_tile_scales_with_the_axis_and_rounds_half_to_even():
    assert spatial_tile_size(24, 24) == 16  # the long side: 512 px
    assert spatial_tile_size(20, 24) == 13  # 16 * 20 / 24 = 13.33
    assert spatial_tile_size(9, 32) == 4  # 4.5 -> 4 (Python's round), not 5
    assert spatial_tile_size(1, 48) == 3  # never under overlap + 1
    rows, cols = spatial_intervals(20, 24)
    assert (rows.starts, rows.ends) == ((0, 11), (13, 20))
    assert (cols.starts, cols.ends) == ((0, 14), (16, 24))
    assert spatial_intervals(16, 10) == (Intervals((0,), (16,), (0,), (0,)), Intervals((0,), (10,), (0,), (0,)))


def test_trapezoid_ramps_exclude_their_ends_unless_the_left_starts_from_zero():
    assert torch.allclose(trapezoid(5, 2, 1), torch.tensor([1 / 3, 2 / 3, 1, 1, 0.5]))
    assert torch.allclose(trapezoid(4, 3, 0, left_from_zero=True), torch.tensor([0, 1 / 3, 2 / 3, 1]))
    assert torch.equal(trapezoid(3, 0, 0), torch.ones(3))
    assert torch.equal(trapezoid(2, 5, 0), trapezoid(2, 2, 0))  # a ramp longer than the mask is clipped
    with pytest.raises(ValueError):
        trapezoid(0, 0, 0)


def test_pixel_slices_and_masks():
    (s0, m0), (s1, m1) = spatial_pixels(Intervals((0, 11), (13, 20), (0, 2), (2, 0)))
    assert (s0, s1) == (slice(0, 416), slice(352, 640))
    assert len(m0) == 416 and len(m1) == 288
    assert torch.equal(m0[:352], torch.ones(352)) and torch.equal(m1[64:], torch.ones(224))
    assert torch.allclose(m0[352:] + m1[:64], torch.ones(64))  # the 64 shared px sum to 1
    spans = temporal_pixels(temporal_intervals(17))
    assert [span for span, _ in spans] == [slice(0, 57), slice(32, 97), slice(72, 129)]
    (_, t0), (_, t1), (_, t2) = spans
    # The second group's first frame re-decodes latent frame 4 causally: weight 0, the first group keeps it.
    assert t1[0] == 0 and t0[32] == 1
    assert torch.allclose(t0[32:] + t1[:25], torch.ones(25))
    assert torch.allclose(t1[40:] + t2[:25], torch.ones(25))


def test_blend_weight_is_separable():
    t, h, w = torch.rand(3), torch.rand(4), torch.rand(5)
    weight = blend_weight(t, h, w)
    assert weight.shape == (1, 1, 3, 4, 5)
    assert torch.equal(weight[0, 0], (t[:, None, None] * h[None, :, None]) * w[None, None, :])


@pytest.mark.parametrize("length", [1, 2, 8, 9, 14, 16, 17, 20, 24, 33, 48, 61])
def test_the_masks_of_an_axis_sum_to_one_everywhere(length):
    # The tiles are the product of per-axis intervals and their weights separable, so the weights
    # of all tiles sum to the product of these per-axis sums: 1 everywhere, seams included.
    for spans, size in [(temporal_pixels(temporal_intervals(length)), pixel_frames(length)),
                        (spatial_pixels(spatial_intervals(length, 24)[0]), length * 32),
                        (spatial_pixels(spatial_intervals(24, length)[1]), length * 32)]:
        total = torch.zeros(size)
        for span, mask in spans:
            total[span] += mask
        assert torch.allclose(total, torch.ones(size), atol=1e-6)


def test_tiles_are_the_product_of_the_axes_row_by_row():
    groups = plan_tiles(17, 20, 24)
    assert [len(group) for group in groups] == [4, 4, 4]
    assert [tile.latent[1:] for tile in groups[1]] == [
        (slice(0, 13), slice(0, 16)), (slice(0, 13), slice(14, 24)),
        (slice(11, 20), slice(0, 16)), (slice(11, 20), slice(14, 24)),
    ]
    assert all(tile.latent[0] == slice(4, 13) and tile.pixels[0] == slice(32, 97) for tile in groups[1])


@pytest.mark.parametrize(("frames", "height", "width"), [(1, 1, 1), (3, 4, 6), (17, 3, 4), (17, 2, 17),
                                                        (14, 17, 3)])
def test_tiled_decode_of_a_local_decoder_equals_the_whole_decode(frames, height, width):
    latents = torch.randn(1, 3, frames, height, width, generator=torch.Generator().manual_seed(0))
    chunks = list(tiled_decode(causal_decode, latents))
    assert len(chunks) == decode_groups(frames, height, width)
    video = torch.cat(chunks, dim=2)
    assert video.shape == (1, 3, pixel_frames(frames), height * 32, width * 32)
    torch.testing.assert_close(video, causal_decode(latents), rtol=1e-6, atol=1e-6)


def test_chunks_stream_before_later_groups_are_decoded():
    latents = torch.zeros(1, 3, 61, 1, 17)  # 481 frames of 32x544: 12 groups of 2 tiles
    calls = []

    def counting(z):
        calls.append(tuple(z.shape[2:]))
        return causal_decode(z)

    lengths, calls_at_yield = [], []
    for chunk in tiled_decode(counting, latents):
        lengths.append(chunk.shape[2])
        calls_at_yield.append(len(calls))
    assert calls_at_yield == [2 * (i + 1) for i in range(12)]  # each group's 2 tiles, then its frames
    assert lengths[0] == 32 and set(lengths[1:-1]) == {40} and sum(lengths) == pixel_frames(61)
    # Memory: no tile reads more than 9 latent frames (65 pixel frames) or 16 cells (512 px) a side.
    assert max(f for f, _, _ in calls) == 9 and max(w for _, _, w in calls) == 16


def test_overlapping_tiles_are_blended_by_their_ramps():
    latents = torch.zeros(1, 3, 17, 1, 1)
    starts = iter(range(100))

    def constant(z):  # each tile decodes to its own index, so the blend shows
        return torch.full((1, 3, pixel_frames(z.shape[2]), 32, 32), float(next(starts)))

    values = torch.cat(list(tiled_decode(constant, latents)), dim=2)[0, 0, :, 0, 0]
    assert torch.equal(values[:33], torch.zeros(33))  # frame 32: the second tile's causal frame has weight 0
    assert torch.all(values[33:57] > 0) and torch.all(values[33:57] < 1)
    assert torch.all(values[1:] >= values[:-1])  # ramps from one tile to the next, never back
    assert torch.equal(values[57:72], torch.ones(15)) and values[-1] == 2


def test_no_tiling_decodes_the_clip_in_one_call_and_buffers_keep_the_latent_dtype():
    latents = torch.randn(1, 3, 17, 2, 17).to(torch.bfloat16)
    calls = []
    chunks = list(tiled_decode(lambda z: calls.append(z.shape) or causal_decode(z), latents, None))
    assert len(chunks) == 1 and calls == [latents.shape]
    assert chunks[0].dtype == torch.bfloat16 and torch.equal(chunks[0], causal_decode(latents))


def test_a_decoder_with_the_wrong_geometry_is_refused():
    with pytest.raises(ValueError, match="decoder returned"):
        list(tiled_decode(lambda z: causal_decode(z)[:, :, 1:], torch.zeros(1, 3, 3, 2, 2)))


def test_tiling_is_validated_as_the_reference_does():
    assert DecodeTiling(512, 64, 64, 24) == REFERENCE_TILING
    for bad in [(500, 64, 64, 24), (512, 512, 64, 24), (512, 64, 60, 24), (512, 64, 8, 0)]:
        with pytest.raises(ValueError):
            DecodeTiling(*bad)


def test_uint8_conversion_truncates_as_the_reference():
    video = torch.tensor([-1.0, -0.5, 0.0, 0.5, 0.999, 1.0, 2.0]).view(1, 1, 7, 1, 1).expand(1, 3, 7, 1, 1)
    frames = to_uint8_frames(video)
    assert frames.shape == (7, 1, 1, 3) and frames.dtype == np.uint8
    # 63.75 -> 63, 127.5 -> 127, 191.25 -> 191, 254.87 -> 254: the fraction is dropped, not rounded.
    assert frames[:, 0, 0, 0].tolist() == [0, 63, 127, 191, 254, 255, 255]
