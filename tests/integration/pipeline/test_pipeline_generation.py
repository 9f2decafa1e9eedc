"""The runtime end to end on the tiny model: passes, geometry read back, strength, determinism, cancel."""

import hashlib
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from pipeline.errors import Cancelled
from pipeline.generation.runtime import VideoGenerator
from pipeline.generation.schedule import PASSES_PER_JOB
from pipeline.params import GenerationParams
from sample_media import png_bytes, read_mp4

IMAGE = png_bytes(96, 64, seed=3)


def small(**fields) -> GenerationParams:
    base = {"prompt": "a red fox in snow", "resolution": "128x128",
            "num_frames": 9, "seed": 1}
    return GenerationParams(**{**base, **fields})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exactly_eleven_transformer_passes_per_job(tiny_generator, tmp_path):
    before = tiny_generator.transformer_passes
    result = tiny_generator.generate(small(), IMAGE, tmp_path / "a.mp4")
    assert result.transformer_passes == PASSES_PER_JOB == 11
    assert tiny_generator.transformer_passes - before == 11


def test_progress_reports_every_step_of_both_stages(tiny_generator, tmp_path):
    seen = []
    tiny_generator.generate(small(), IMAGE, tmp_path / "p.mp4", on_progress=seen.append)
    steps = [(p.stage, p.step, p.total) for p in seen if p.stage in ("stage1", "stage2")]
    assert steps == [("stage1", i, 8) for i in range(1, 9)] + [("stage2", i, 3) for i in range(1, 4)]
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


@pytest.mark.parametrize(
    ("num_frames", "fps", "resolution"),
    [(10, 24.0, "128x128"), (20, 23.976, "256x128"), (9, 12.5, "128x192")],
)
def test_frames_fps_size_and_audio_duration_read_back(tiny_generator, tmp_path, num_frames, fps, resolution):
    request = small(num_frames=num_frames, frames_per_second=fps, resolution=resolution)
    result = tiny_generator.generate(request, IMAGE, tmp_path / "g.mp4")
    facts = read_mp4(result.path)
    width, height = map(int, resolution.split("x"))
    assert (facts.width, facts.height) == (width, height)
    assert facts.video_frames == num_frames
    assert facts.fps == Fraction(repr(fps)).limit_denominator(10_000)
    assert (facts.audio_codec, facts.audio_rate, facts.audio_channels) == ("aac", 48_000, 2)
    assert facts.audio_duration == pytest.approx(num_frames / fps, abs=1 / 48_000)


def test_no_audio_track_when_generate_audio_is_false(tiny_generator, tmp_path):
    result = tiny_generator.generate(small(generate_audio=False), IMAGE, tmp_path / "silent.mp4")
    assert not result.has_audio
    assert read_mp4(result.path).audio_codec is None


def test_auto_resolution_keeps_the_image_aspect(tiny_generator, tmp_path):
    request = small(resolution="auto", num_frames=9)
    result = tiny_generator.generate(request, png_bytes(192, 108), tmp_path / "auto.mp4")
    assert (result.width, result.height) == (1024, 576)


def test_strength_one_keeps_frame_zero_exactly(tiny_generator):
    with torch.inference_mode():
        kept = tiny_generator.denoise(small(image_strength=1.0), IMAGE, seed=5)
        free = tiny_generator.denoise(small(image_strength=0.0), IMAGE, seed=5)
        partial = tiny_generator.denoise(small(image_strength=0.7), IMAGE, seed=5)
    assert torch.equal(kept.video[:, :, :1], kept.image_latent)
    assert not torch.allclose(free.video[:, :, :1], free.image_latent, atol=1e-3)
    # 0.7 sits between: closer to the image than an unconditioned frame.
    distance = lambda d: (d.video[:, :, :1] - d.image_latent).abs().mean()  # noqa: E731
    assert distance(kept) < distance(partial) < distance(free)


def test_same_request_and_seed_give_identical_bytes(tiny_generator, tmp_path):
    first = tiny_generator.generate(small(seed=42), IMAGE, tmp_path / "1.mp4")
    second = tiny_generator.generate(small(seed=42), IMAGE, tmp_path / "2.mp4")
    other = tiny_generator.generate(small(seed=43), IMAGE, tmp_path / "3.mp4")
    assert sha(first.path) == sha(second.path)
    assert sha(first.path) != sha(other.path)


def test_a_freshly_loaded_generator_reproduces_the_bytes(tiny_weights, tiny_generator, tmp_path):
    fresh = VideoGenerator.from_directory(tiny_weights)
    a = fresh.generate(small(seed=9), IMAGE, tmp_path / "fresh.mp4")
    b = tiny_generator.generate(small(seed=9), IMAGE, tmp_path / "warm.mp4")
    assert sha(a.path) == sha(b.path)


def test_missing_seed_is_chosen_and_reported_and_reproduces(tiny_generator, tmp_path):
    chosen = tiny_generator.generate(small(seed=None), IMAGE, tmp_path / "r.mp4")
    assert isinstance(chosen.seed, int) and 0 <= chosen.seed < 2**32
    again = tiny_generator.generate(small(seed=chosen.seed), IMAGE, tmp_path / "r2.mp4")
    assert sha(chosen.path) == sha(again.path)


@pytest.mark.parametrize("cancel_after", [0, 3, 9])
def test_cancel_stops_within_one_step_and_leaves_no_file(tiny_generator, tmp_path, cancel_after):
    steps = []

    def on_progress(p):
        if p.stage in ("stage1", "stage2"):
            steps.append(p)

    before = tiny_generator.transformer_passes
    with pytest.raises(Cancelled):
        tiny_generator.generate(
            small(), IMAGE, tmp_path / "c.mp4", on_progress=on_progress,
            should_cancel=lambda: len(steps) >= cancel_after,
        )
    assert tiny_generator.transformer_passes - before == cancel_after  # not one pass more
    assert list(tmp_path.iterdir()) == []


def test_cancel_during_decode_leaves_no_partial_file(tiny_generator, tmp_path):
    state = {"decoding": False}

    def on_progress(p):
        state["decoding"] = p.stage == "decode"

    with pytest.raises(Cancelled):
        tiny_generator.generate(
            small(num_frames=81, resolution="128x128"), IMAGE, tmp_path / "d.mp4",
            on_progress=on_progress, should_cancel=lambda: state["decoding"],
        )
    assert list(tmp_path.iterdir()) == []


def test_prompt_embeddings_are_cached_and_models_stay_resident(tiny_generator, tmp_path):
    transformer = tiny_generator.components.transformer
    calls = tiny_generator.text_encoder_calls
    tiny_generator.generate(small(prompt="a unique prompt for the cache"), IMAGE, tmp_path / "1.mp4")
    tiny_generator.generate(small(prompt="a unique prompt for the cache", seed=2), IMAGE, tmp_path / "2.mp4")
    assert tiny_generator.text_encoder_calls == calls + 1
    tiny_generator.generate(small(prompt="another prompt"), IMAGE, tmp_path / "3.mp4")
    assert tiny_generator.text_encoder_calls == calls + 2
    assert tiny_generator.components.transformer is transformer


def test_image_crf_round_trip_is_switchable(tiny_generator):
    with torch.inference_mode():
        with_crf = tiny_generator.denoise(small(), IMAGE, seed=1)
        without = tiny_generator.denoise(small(), IMAGE, seed=1, image_crf=None)
    assert not torch.equal(with_crf.image_latent, without.image_latent)


@pytest.mark.slow
def test_all_defaults_from_a_512_image_complete(tiny_generator, tmp_path):
    request = GenerationParams(prompt="a lighthouse at dusk")
    result = tiny_generator.generate(request, png_bytes(512, 512), tmp_path / "defaults.mp4")
    facts = read_mp4(result.path)
    assert (facts.width, facts.height, facts.video_frames) == (768, 768, 121)
    assert facts.audio_duration == pytest.approx(121 / 24, abs=1 / 48_000)


def test_rope_positions_are_rounded_to_the_pipeline_dtype_as_the_reference_keeps_them(tiny_generator):
    """ltx-pipelines holds positions in the latent state's dtype (bfloat16 on a GPU)."""
    shape, audio_frames, fps = (16, 4, 6), 50, 24.0
    exact_video, exact_audio = tiny_generator._coords(shape, audio_frames, fps)  # float32 pipeline: untouched
    rope = tiny_generator.components.transformer.rope
    assert torch.equal(exact_video, rope.prepare_video_coords(1, *shape, exact_video.device, fps=fps))
    tiny_generator.dtype = torch.bfloat16
    try:
        video, audio = tiny_generator._coords(shape, audio_frames, fps)
    finally:
        tiny_generator.dtype = torch.float32
    assert video.dtype == exact_video.dtype
    assert torch.equal(video, exact_video.to(torch.bfloat16).float())
    assert torch.equal(audio, exact_audio.to(torch.bfloat16).float())
    assert not torch.equal(video, exact_video)  # time positions k/24 s are not all bfloat16 numbers
