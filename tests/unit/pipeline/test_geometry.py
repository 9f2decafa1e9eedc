"""Planning tables: sizes, frame counts, exact frame rates and audio length."""

from fractions import Fraction

import pytest

from pipeline.geometry import (
    VAE_SPATIAL,
    VAE_TEMPORAL,
    fps_fraction,
    generated_frame_count,
    job_geometry,
    latent_frame_count,
    pixel_frames,
    plan_geometry,
    plan_size,
)
from pipeline.params import RESOLUTION_PRESETS, GenerationParams
from pipeline.placement import plan


@pytest.mark.parametrize("preset", list(RESOLUTION_PRESETS))
def test_presets_are_fals_sizes_regardless_of_image(preset):
    assert plan_size(preset, 333, 777) == RESOLUTION_PRESETS[preset]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ((512, 512), (768, 768)),  # 768^2 == 1024*576 exactly
        ((1920, 1080), (1024, 576)),
        ((1080, 1920), (576, 1024)),
        ((1024, 768), (896, 640)),
        ((4000, 3000), (896, 640)),
        ((100, 4000), (256, 2048)),  # clamped to the trained 2048 px range
    ],
)
def test_auto_keeps_aspect_at_about_landscape_16_9_area(image, expected):
    width, height = plan_size("auto", *image)
    assert (width, height) == expected
    assert width % 64 == 0 and height % 64 == 0


def test_auto_area_stays_near_the_16_9_preset():
    for aspect in (0.5, 0.75, 1.0, 1.33, 1.78, 2.0):
        width, height = plan_size("auto", int(1000 * aspect), 1000)
        assert abs(width * height / (1024 * 576) - 1) < 0.15
        assert abs(width / height - aspect) / aspect < 0.1


def test_explicit_size():
    assert plan_size("1536x1024", 10, 10) == (1536, 1024)


@pytest.mark.parametrize(
    ("requested", "generated"), [(9, 9), (10, 17), (16, 17), (17, 17), (121, 121), (122, 129), (480, 481), (481, 481)]
)
def test_generated_frames_are_the_smallest_8k_plus_1(requested, generated):
    assert generated_frame_count(requested) == generated
    assert (generated - 1) % 8 == 0 and generated >= requested


@pytest.mark.parametrize(
    ("fps", "fraction"),
    [(24, Fraction(24)), (23.976, Fraction(2997, 125)), (29.97, Fraction(2997, 100)),
     (30000 / 1001, Fraction(30000, 1001)), (12.5, Fraction(25, 2)), (1, Fraction(1)), (60, Fraction(60))],
)
def test_frame_rates_stay_exact(fps, fraction):
    assert fps_fraction(fps) == fraction


def test_geometry_of_the_reference_default():
    geometry = plan_geometry(GenerationParams(prompt="p", resolution="1536x1024"), 1, 1)
    assert geometry.stage1_size == (768, 512)
    assert geometry.latent_shape(1) == (16, 16, 24)
    assert geometry.video_tokens(1) == 6_144  # the reference's 768x512x121 figure
    assert geometry.video_tokens(2) == 24_576
    assert geometry.audio_latent_frames == round(121 / 24 * 25)


def test_delivered_duration_and_audio_samples_are_exact():
    request = GenerationParams(prompt="p", num_frames=100, frames_per_second=23.976)
    geometry = plan_geometry(request, 512, 512)
    assert geometry.generated_frames == 105 and geometry.num_frames == 100
    assert geometry.duration == Fraction(100) / Fraction(2997, 125)
    assert geometry.audio_samples() == round(100 * 125 / 2997 * 48000)
    assert geometry.audio_samples(48_000) == 200_200


@pytest.mark.parametrize(
    ("width", "height", "frames", "stage1", "stage2", "audio"),
    [
        (768, 512, 121, 1_536, 6_144, 126),
        (1536, 1024, 121, 6_144, 24_576, 126),
        (1024, 576, 120, 2_304, 9_216, 126),  # 120 frames generate 121
        (1024, 1024, 481, 15_616, 62_464, 501),
        (512, 512, 9, 128, 512, 9),
    ],
)
def test_token_counts_the_planner_reasons_about(width, height, frames, stage1, stage2, audio):
    geometry = job_geometry(width, height, frames)
    assert geometry.video_tokens(1) == stage1 and geometry.video_tokens(2) == geometry.video_tokens() == stage2
    frames_, rows, cols = geometry.latent_shape(2)
    assert stage2 == frames_ * rows * cols and rows == height // VAE_SPATIAL and cols == width // VAE_SPATIAL
    assert geometry.audio_latent_frames == audio
    # The planner sizes a transformer pass from exactly these counts (one rule, written in geometry).
    per_token = plan.BF16 * plan.TRANSFORMER_ACTIVATION_WIDTHS
    assert plan.estimate("resident", geometry).phases["denoise"] == (
        stage2 * plan.VIDEO_WIDTH + audio * plan.AUDIO_WIDTH
    ) * per_token


def test_a_requests_geometry_is_the_planners_geometry():
    request = GenerationParams(prompt="p", num_frames=100, resolution="1536x1024", frames_per_second=23.976)
    planned = plan_geometry(request, 640, 480)
    assert planned == job_geometry(1536, 1024, 100, 23.976)
    assert plan.estimate("fp8", planned).peak == plan.estimate("fp8", job_geometry(1536, 1024, 100, 23.976)).peak


@pytest.mark.parametrize("latent", [1, 2, 8, 16, 61])
def test_latent_and_pixel_frames_are_inverse(latent):
    pixels = pixel_frames(latent)
    assert pixels == 1 + (latent - 1) * VAE_TEMPORAL
    assert generated_frame_count(pixels) == pixels and latent_frame_count(pixels) == latent
