"""The denoising arithmetic of image conditioning, on small tensors."""

import torch

from pipeline.generation.schedule import (
    PASSES_PER_JOB,
    STAGE1_SIGMAS,
    STAGE2_SIGMAS,
    conditioned_x0,
    euler_step,
    first_frame_mask,
    noised_state,
    pack_video,
    sigma_tensor,
    unpack_audio,
    unpack_video,
)


def test_the_distilled_schedule():
    assert STAGE1_SIGMAS == (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
    assert STAGE2_SIGMAS == (0.909375, 0.725, 0.421875, 0.0)
    assert PASSES_PER_JOB == 11


def test_first_frame_mask_marks_only_latent_frame_zero():
    mask = first_frame_mask(3, 2, 2, strength=0.7)
    assert mask.shape == (1, 12)
    assert torch.allclose(mask[0, :4], torch.full((4,), 0.3))
    assert torch.equal(mask[0, 4:], torch.ones(8))


def test_noise_on_conditioned_tokens_is_scaled_by_one_minus_strength():
    clean, noise = torch.full((1, 2, 1), 5.0), torch.full((1, 2, 1), -1.0)
    mask = torch.tensor([[0.25, 1.0]]).unsqueeze(-1)
    mixed = noised_state(clean, noise, mask * 1.0)
    assert torch.allclose(mixed[0, :, 0], torch.tensor([0.25 * -1 + 0.75 * 5, -1.0]))


def test_strength_one_keeps_the_image_latent_exactly_through_every_step():
    torch.manual_seed(0)
    clean = torch.randn(1, 6, 4)
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    sample = noised_state(clean, torch.randn(1, 6, 4), mask.unsqueeze(-1))
    sigmas = sigma_tensor(STAGE1_SIGMAS)
    for i in range(len(STAGE1_SIGMAS) - 1):
        x0 = conditioned_x0(sample, torch.randn(1, 6, 4), sigmas[i], mask, clean)
        sample = euler_step(sample, x0, sigmas[i], sigmas[i + 1])
    assert torch.equal(sample[:, :2], clean[:, :2])
    assert not torch.allclose(sample[:, 2:], clean[:, 2:])


def test_partial_strength_blends_the_clean_estimate():
    sample, velocity, clean = torch.zeros(1, 1, 1), torch.ones(1, 1, 1), torch.full((1, 1, 1), 10.0)
    x0 = conditioned_x0(sample, velocity, torch.tensor(0.5), torch.tensor([[0.4]]), clean)
    # denoised = 0 - 1 * (0.5 * 0.4) = -0.2, blended: -0.2 * 0.4 + 10 * 0.6
    assert torch.allclose(x0, torch.tensor(-0.2 * 0.4 + 6.0))


def test_last_euler_step_lands_on_the_clean_estimate():
    sample, x0 = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(euler_step(sample, x0, torch.tensor(0.421875), torch.tensor(0.0)), x0, atol=1e-6)


def test_packing_round_trips():
    video = torch.randn(1, 8, 3, 4, 5)
    assert torch.equal(unpack_video(pack_video(video), 3, 4, 5), video)
    assert pack_video(video).shape == (1, 60, 8)
    tokens = torch.arange(56.0).view(1, 7, 8)  # (B, L, C*M): channel-major within a token, as diffusers packs
    audio = unpack_audio(tokens, 4)
    assert audio.shape == (1, 2, 7, 4)
    assert audio[0, 1, 3].tolist() == tokens[0, 3, 4:].tolist()
