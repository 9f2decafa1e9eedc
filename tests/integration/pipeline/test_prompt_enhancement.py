"""Prompt enhancement on the tiny model: Gemma 3 (tiny, random) rewrites the prompt with the start image.

The rewrite is gibberish (random weights, a character-level vocabulary), but the mechanics are
the real ones: the reference's system prompt and chat, the image through the vision tower, the
job's seed, the bound on its length, the rewrite used for generation, the fallback on failure.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import Cancelled
from pipeline.generation.enhance import chat_text, enhance_prompt
from pipeline.generation.runtime import VideoGenerator
from pipeline.params import GenerationParams

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def generator(tiny_weights) -> VideoGenerator:
    return VideoGenerator.from_directory(tiny_weights, enhance_max_tokens=MAX_TOKENS)


def png(seed: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def request(**extra) -> GenerationParams:
    return GenerationParams(**{"prompt": "a red boat", "num_frames": 9, "resolution": "128x128",
                               "generate_audio": False, **extra})


def test_the_chat_shows_the_system_prompt_then_the_image_then_the_prompt(generator):
    text = chat_text(generator.components.tokenizer, "SYSTEM", "a red boat")
    assert text.index("SYSTEM") < text.index("<start_of_image>") < text.index("User Raw Input Prompt: a red boat.")
    assert text.endswith("<start_of_turn>model\n")


def test_off_by_default_on_deterministic_per_seed_and_used_for_generation(generator):
    with torch.inference_mode():
        plain = generator.denoise(request(seed=1), png(0), 1)
        assert generator.enhanced is None
        first = generator.denoise(request(seed=1, enhance_prompt=True), png(0), 1)
        rewrite = generator.enhanced
        again = generator.denoise(request(seed=1, enhance_prompt=True), png(0), 1)
        assert generator.enhanced == rewrite and rewrite.enhanced and rewrite.note is None
        assert rewrite.prompt != "a red boat" and torch.equal(first.video, again.video)
        assert not torch.equal(first.video, plain.video)
        # Generation used the rewrite: the same job given the rewrite as its prompt is the same video.
        direct = generator.denoise(request(seed=1, prompt=rewrite.prompt), png(0), 1)
        assert torch.equal(direct.video, first.video)
        # Bounded: at most MAX_TOKENS generated tokens (one character each in the tiny vocabulary).
        assert len(generator.components.tokenizer(rewrite.prompt, add_special_tokens=False).input_ids) <= MAX_TOKENS
        other = enhance_prompt(generator.components.text_encoder, generator.components.tokenizer, "a red boat",
                               np.zeros((48, 64, 3), np.uint8), seed=2, max_new_tokens=MAX_TOKENS)
        assert other.prompt != rewrite.prompt  # another seed samples another rewrite


def test_the_rewrite_sees_the_start_image(tiny_weights):
    # The tiny Gemma's image projection is initialised to zeros (as transformers initialises Gemma 3's),
    # which makes it blind; give it weights and two images must give two rewrites.
    generator = VideoGenerator.from_directory(tiny_weights, enhance_max_tokens=MAX_TOKENS)
    encoder, tokenizer = generator.components.text_encoder, generator.components.tokenizer
    projection = encoder.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        projection.copy_(torch.randn(projection.shape, generator=torch.Generator().manual_seed(0)) * 3)
    frames = [np.asarray(Image.open(io.BytesIO(png(seed))).convert("RGB")) for seed in (0, 1)]
    rewrites = [enhance_prompt(encoder, tokenizer, "a red boat", frame, seed=5, max_new_tokens=MAX_TOKENS)
                for frame in frames]
    assert rewrites[0].enhanced and rewrites[1].enhanced and rewrites[0].prompt != rewrites[1].prompt
    same = enhance_prompt(encoder, tokenizer, "a red boat", frames[0], seed=5, max_new_tokens=MAX_TOKENS)
    assert same == rewrites[0]


def test_a_failed_rewrite_falls_back_to_the_prompt_with_a_note(generator, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(generator.components.text_encoder, "generate", broken)
    result = generator.generate(request(seed=3, enhance_prompt=True), png(0), tmp_path / "out.mp4")
    assert result.path.is_file() and result.enhanced_prompt == "a red boat"
    assert "enhancement failed (RuntimeError: CUDA error" in result.enhance_note
    assert "original prompt was used" in result.enhance_note
    monkeypatch.setattr(generator.components.text_encoder, "generate", lambda *a, **k: torch.zeros(1, 0).long())
    with torch.inference_mode():
        generator.denoise(request(seed=3, enhance_prompt=True), png(0), 3)
    assert generator.enhanced.prompt == "a red boat" and "no text" in generator.enhanced.note


def test_cancelling_during_the_rewrite_stops_it(generator, tmp_path):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3  # cancelled once generation is under way

    with pytest.raises(Cancelled):
        generator.generate(request(seed=4, enhance_prompt=True), png(0), tmp_path / "c.mp4", should_cancel=cancel)
    assert not (tmp_path / "c.mp4").exists()


def test_under_an_encoder_swap_gemma_is_copied_in_once_per_rewrite(tiny_weights):
    """The encoder-offload plan swaps Gemma in per forward call; a rewrite (one call per token) holds it once."""
    from pipeline.placement.apply import EncoderSwap, language_model

    generator = VideoGenerator.from_directory(tiny_weights, enhance_max_tokens=MAX_TOKENS)
    encoder = generator.components.text_encoder
    swap = EncoderSwap(encoder, [language_model(encoder)], "cpu", pin=False)  # CPU "device": copies observable
    encoder._ltx_swaps = [swap]
    frame = np.zeros((48, 64, 3), np.uint8)
    done = enhance_prompt(encoder, generator.components.tokenizer, "a red boat", frame, seed=1,
                          max_new_tokens=MAX_TOKENS)
    assert done.enhanced and swap.calls == 1  # not one copy per generated token
    generator.encode_prompt("after the rewrite")  # the per-call swap is back for encodes
    assert swap.calls == 2
    encoder._ltx_swaps = [swap, swap]  # a streamed (layer by layer) plan: refused with a note, not run
    kept = enhance_prompt(encoder, generator.components.tokenizer, "a red boat", frame, seed=1,
                          max_new_tokens=MAX_TOKENS)
    assert not kept.enhanced and kept.prompt == "a red boat" and "layer by layer" in kept.note
