"""The memory planner's activation constants, each backed by a measurement on the real widths.

The real-config modules run on the meta device (no memory, no data: milliseconds) under
`tensor_memory.TensorMemory`, which accounts every tensor an op allocates from its creation to
the death of its last view: what `torch.cuda.max_memory_allocated()` reports on a GPU, with SDPA
counted as the flash / memory-efficient kernels allocate (no score matrix). Each test measures,
then checks that the planner's constant covers the measurement without a large margin.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.generation.decode import tiled_decode
from pipeline.geometry import job_geometry
from pipeline.placement import plan as mp
from pipeline.weights.registry import REAL_CONFIGS, meta_module
from tensor_memory import TensorMemory

MiB = 2**20


def test_the_tracker_counts_allocations_until_their_last_view_dies():
    with TensorMemory(flash_sdpa=False) as mem:
        a = torch.empty(1024, device="meta")  # 4 KiB
        view = a[:10]
        b = a * 2  # 4 KiB more
        del a
        assert mem.live == 8192  # `a` lives on through its view
        del view
        assert mem.live == 4096
        c = torch.empty(4096, dtype=torch.bfloat16, device="meta")  # 8 KiB
        del b, c
    assert mem.peak == 12288 and mem.live == 0


def test_flash_attention_accounting_holds_no_score_matrix():
    q = torch.empty(1, 32, 4096, 128, dtype=torch.bfloat16, device="meta")
    with TensorMemory() as mem:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert out.shape == q.shape and mem.peak == q.numel() * 2 + 32 * 4096 * 4  # output + log-sum-exp
    with TensorMemory(flash_sdpa=False) as math:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert math.peak > 32 * 4096 * 4096 * 2  # the math path materialises the scores


def _transformer(layers: int) -> torch.nn.Module:
    module = meta_module("transformer", {"transformer": dict(REAL_CONFIGS["transformer"], num_layers=layers)})
    module = module.to(torch.bfloat16)
    module.set_attention_backend("native")  # torch SDPA, as the runtime selects
    return module


def _pass_peak(transformer: torch.nn.Module, frames: int, height: int, width: int, audio: int) -> int:
    """Peak bytes of one transformer pass with the runtime's arguments (pipeline.generation.runtime.velocity)."""
    dev, bf16 = "meta", torch.bfloat16
    tokens = frames * height * width
    text = torch.empty(1, mp.MAX_SEQUENCE_LENGTH, mp.VIDEO_WIDTH, dtype=bf16, device=dev)
    audio_text = torch.empty(1, mp.MAX_SEQUENCE_LENGTH, mp.AUDIO_WIDTH, dtype=bf16, device=dev)
    mask = torch.ones(1, mp.MAX_SEQUENCE_LENGTH, device=dev)
    sigma = torch.empty(1, device=dev)
    video_coords = transformer.rope.prepare_video_coords(1, frames, height, width, dev, fps=24.0)
    audio_coords = transformer.audio_rope.prepare_audio_coords(1, audio, dev)
    with torch.no_grad(), TensorMemory() as mem:
        transformer(
            hidden_states=torch.empty(1, tokens, 128, dtype=bf16, device=dev),
            audio_hidden_states=torch.empty(1, audio, 128, dtype=bf16, device=dev),
            encoder_hidden_states=text, audio_encoder_hidden_states=audio_text,
            timestep=torch.empty(1, tokens, device=dev), audio_timestep=sigma, sigma=sigma,
            encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
            num_frames=frames, height=height, width=width, fps=24.0, audio_num_frames=audio,
            video_coords=video_coords, audio_coords=audio_coords, use_cross_timestep=True, return_dict=False,
        )
    return mem.peak


def _hidden_units(video_tokens: int, audio_tokens: int) -> int:
    """Bytes of one bf16 hidden-state tensor of the video tokens plus one of the audio tokens."""
    return (video_tokens * mp.VIDEO_WIDTH + audio_tokens * mp.AUDIO_WIDTH) * mp.BF16


def test_denoising_activation_widths_per_token():
    """~37 hidden widths per token (the planner assumed 32: the per-block copy of the 9 x 4096 `temb`)."""
    two = _transformer(2)
    # (latent frames, height, width) -> video tokens 2,048 and 6,144 (768x512x121 at stage 2), with their audio tokens
    sizes = [((8, 16, 16), 51), ((16, 16, 24), 126)]
    points = [(_hidden_units(f * h * w, a), _pass_peak(two, f, h, w, a)) for (f, h, w), a in sizes]
    (x0, y0), (x1, y1) = points
    widths = (y1 - y0) / (x1 - x0)  # the slope: hidden widths alive per token
    fixed = y0 - widths * x0  # what does not grow with tokens (the prompt's side)
    assert 36 < widths < 38, widths
    assert widths <= mp.TRANSFORMER_ACTIVATION_WIDTHS <= widths * 1.1
    assert 0 <= fixed < mp.RUNTIME_MISC_BYTES / 8
    # The peak is one block's, not the depth's: a third layer changes nothing.
    assert _pass_peak(_transformer(3), 8, 16, 16, 51) == points[0][1]
    # The estimate the planner makes for a real job covers the measurement at its size.
    shape = job_geometry(768, 512, 121)
    assert shape.video_tokens(2) == 6144 and shape.audio_latent_frames == 126
    assert mp._transformer_activation_bytes(shape, mp.Calibration()) >= y1


def test_prompt_encoding_extra_bytes():
    """Gemma's 49 hidden states, their stacked copy and the connectors: ~1.8 GiB (the planner assumed 0.97)."""
    gemma = meta_module("text_encoder", REAL_CONFIGS)
    gemma.lm_head = torch.nn.Identity()  # as placed (pipeline.placement.apply): hidden states only
    gemma.set_attn_implementation("sdpa")
    connectors = meta_module("connectors", REAL_CONFIGS).to(torch.bfloat16)
    connectors.set_attention_backend("native")
    ids = torch.zeros(1, mp.MAX_SEQUENCE_LENGTH, dtype=torch.long, device="meta")
    mask = torch.ones(1, mp.MAX_SEQUENCE_LENGTH, dtype=torch.long, device="meta")
    with torch.no_grad(), TensorMemory() as mem:
        # No attention mask into Gemma: building it from a meta mask needs its values; a
        # 1024 x 1024 mask is 1 MiB, nothing next to the hidden states.
        hidden = gemma(input_ids=ids, output_hidden_states=True).hidden_states
        assert len(hidden) == mp.TEXT_HIDDEN_STATES
        stacked = torch.stack(hidden, dim=-1).flatten(2, 3).to(torch.bfloat16)  # as VideoGenerator.encode_prompt
        del hidden
        connectors(stacked, mask, padding_side="left")
    assert 1.7 * 2**30 < mem.peak < 1.9 * 2**30, mem.peak / 2**30
    assert mem.peak <= mp.ENCODE_EXTRA_BYTES <= mem.peak * 1.1


@pytest.fixture(scope="module")
def vae() -> torch.nn.Module:
    return meta_module("vae", REAL_CONFIGS).to(torch.bfloat16)


def test_decoder_bytes_per_output_pixel(vae):
    """One decoder call holds ~73 B per output pixel (its 8x-upsampled frames included); the planner had 128."""
    per_pixel = []
    for latent in [(9, 4, 4), (9, 16, 16), (5, 16, 16)]:  # 65 or 33 frames at 128 or 512 px
        z = torch.empty(1, 128, *latent, dtype=torch.bfloat16, device="meta")
        with torch.no_grad(), TensorMemory() as mem:
            out = vae.decode(z, return_dict=False)[0]
        per_pixel.append(mem.peak / out[0, 0].numel())
    assert all(72 < value < 75 for value in per_pixel), per_pixel
    assert max(per_pixel) <= mp.DECODE_BYTES_PER_PIXEL <= max(per_pixel) * 1.1


@pytest.mark.slow  # ~10 s: every tile of two real-size clips through the real decoder (on meta)
@pytest.mark.parametrize(("width", "height", "frames"), [(768, 512, 121), (1536, 1024, 121)])
def test_the_decode_phase_estimate_covers_the_runtimes_tiled_decode(vae, width, height, frames):
    """The reference tiling's whole decode (tiles, group buffers, carried overlap, uint8 frames) vs `_decode_bytes`."""
    shape = job_geometry(width, height, frames)
    latent = torch.empty(1, 128, *shape.latent_shape(2), dtype=torch.bfloat16, device="meta")
    with torch.no_grad(), TensorMemory() as mem:
        for chunk in tiled_decode(lambda z: vae.decode(z, return_dict=False)[0], latent):
            # pipeline.generation.decode.to_uint8_frames up to the host copy (a meta tensor has no data to copy)
            frames_u8 = (((chunk[0] + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(1, 2, 3, 0)
            frames_u8.contiguous()
            del chunk, frames_u8
    estimated = mp._decode_bytes(shape, mp.needs_vae_tiling(width, height), mp.Calibration())
    assert mem.peak <= estimated <= mem.peak * 1.35, (mem.peak / MiB, estimated / MiB)
