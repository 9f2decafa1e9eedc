"""Windowed decoding covers every frame once, in order, and agrees with a whole-clip decode."""

import numpy as np
import pytest
import torch

from pipeline.video_decode import decode_windows, pixel_frames, to_uint8_frames


def causal_decode(latents: torch.Tensor) -> torch.Tensor:
    """A stand-in decoder with the VAE's frame geometry: latent frame 0 -> 1 frame, others -> 8."""
    first = latents[:, :3, :1]
    rest = latents[:, :3, 1:].repeat_interleave(8, dim=2)
    return torch.cat([first, rest], dim=2)


@pytest.mark.parametrize("latent_frames", [1, 2, 9, 10, 11, 16, 17, 25, 61])
@pytest.mark.parametrize("window", [None, 1, 3, 8])
def test_windows_cover_every_frame_once_and_match_a_whole_decode(latent_frames, window):
    # Values constant along time within a latent frame, so any cross-fade of equal frames is exact.
    latents = torch.arange(latent_frames, dtype=torch.float32).view(1, 1, -1, 1, 1).expand(1, 3, -1, 2, 2).clone()
    chunks = list(decode_windows(causal_decode, latents, window))
    video = torch.cat(chunks, dim=2)
    assert video.shape[2] == pixel_frames(latent_frames)
    assert torch.allclose(video, causal_decode(latents))


def test_long_clips_are_decoded_in_several_windows():
    latents = torch.zeros(1, 3, 61, 1, 1)
    calls = []

    def counting(z):
        calls.append(z.shape[2])
        return causal_decode(z)

    chunks = list(decode_windows(counting, latents, 8, overlap=2))
    assert len(chunks) == len(calls) == 8
    assert max(calls) == 10  # window + overlap: memory is bounded by the window, not the clip


def test_overlapping_frames_are_cross_faded():
    latents = torch.zeros(1, 3, 5, 1, 1)

    def offset_decode(z):  # every window decodes to its own constant, so seams show
        return torch.full((1, 3, pixel_frames(z.shape[2]), 1, 1), float(z.shape[2]))

    video = torch.cat(list(decode_windows(offset_decode, latents, 2, overlap=2)), dim=2)
    assert video.shape[2] == 33
    values = video[0, 0, :, 0, 0]
    # Window [0, 4) decodes to 4.0, window [2, 5) to 3.0; the 9 shared frames ramp from one to the other.
    assert values[0] == 4.0 and values[-1] == 3.0
    assert torch.all(values[1:] <= values[:-1])
    ramp = values[(values < 4.0) & (values > 3.0)]
    assert len(ramp) == 9


def test_uint8_conversion_matches_diffusers_rounding():
    video = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 6, 1, 1).expand(1, 3, 6, 1, 1)
    frames = to_uint8_frames(video)
    assert frames.shape == (6, 1, 1, 3)
    assert frames[:, 0, 0, 0].tolist() == [0, 64, 128, 191, 255, 255]
    assert frames.dtype == np.uint8
