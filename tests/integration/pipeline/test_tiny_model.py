"""The tiny smoke-test model: real geometry, real 2.3 flags, same layout and loader as real weights."""

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from pipeline.weights.loader import load_components
from pipeline.weights.registry import COMPONENT_CLASSES
from pipeline.weights.tiny import TINY_LABEL


def test_saved_in_the_real_layout_and_labelled(tiny_weights):
    for name in [*COMPONENT_CLASSES, "tokenizer"]:
        assert (tiny_weights / name).is_dir(), name
    for name in COMPONENT_CLASSES:
        assert (tiny_weights / name / "config.json").is_file()
        assert list((tiny_weights / name).glob("*.safetensors")), name
    index = json.loads((tiny_weights / "model_index.json").read_text())
    assert index["smoke_test"] is True and index["label"] == TINY_LABEL
    assert "produces noise" in index["label"]


def test_loaded_by_the_one_loader_with_real_geometry(tiny_weights):
    c = load_components(tiny_weights)
    assert c.is_smoke_test
    assert (c.vae.spatial_compression_ratio, c.vae.temporal_compression_ratio) == (32, 8)
    assert c.vocoder.config.output_sampling_rate == 48_000
    assert (c.audio_vae.config.sample_rate, c.audio_vae.config.mel_hop_length) == (16_000, 160)
    t = c.transformer.config
    assert (t.gated_attn, t.cross_attn_mod, t.audio_gated_attn, t.audio_cross_attn_mod) == (True,) * 4
    assert (t.rope_type, t.use_prompt_embeddings, t.perturbed_attn) == ("split", False, True)
    assert c.connectors.config.per_modality_projections
    with torch.no_grad():
        # 9 frames at 64x64 -> 2 latent frames of 2x2; the upsampler doubles the latent grid.
        latent = c.vae.encode(torch.zeros(1, 3, 9, 64, 64)).latent_dist.mode()
        assert latent.shape[2:] == (2, 2, 2)
        assert c.latent_upsampler(latent).shape[2:] == (2, 4, 4)
        assert c.vae.decode(latent, return_dict=False)[0].shape[2:] == (9, 64, 64)
        # 25 audio latents (one second) -> 4L-3 = 97 mel frames -> 480 samples each at 48 kHz.
        mel = c.audio_vae.decode(torch.zeros(1, 2, 25, 4), return_dict=False)[0]
        assert mel.shape[2] == 97
        assert c.vocoder(mel).shape == (1, 2, 97 * 480)


def _build_in_subprocess(cache: str) -> str:
    from pipeline.weights.tiny import ensure_tiny_model

    return str(ensure_tiny_model(Path(cache)))


@pytest.mark.slow  # several processes racing to build the model
def test_concurrent_first_builds_yield_one_valid_model(tmp_path):
    # A server and its workers may all build the tiny model at start; none may see a half-built one.
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        paths = set(pool.map(_build_in_subprocess, [str(tmp_path)] * 3))
    assert len(paths) == 1
    assert load_components(Path(paths.pop())).is_smoke_test
