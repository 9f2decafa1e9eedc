"""Configs derived from an official checkpoint's metadata, with ltx-core's defaults for absent keys."""

from __future__ import annotations

import copy
import json

import pytest

from pipeline.weights.checkpoint_config import (
    CheckpointConfigError,
    checkpoint_configs,
    config_differences,
    parse_metadata_config,
    upsampler_config,
    vae_config,
    vocoder_config,
)
from pipeline.weights.registry import REAL_CONFIGS
from repo_paths import FIXTURES

REFERENCE = json.loads((FIXTURES / "ltx23_reference_config.json").read_text())


@pytest.fixture
def config() -> dict:
    return copy.deepcopy(REFERENCE["checkpoint"])


def test_the_23_metadata_gives_the_real_configs_but_for_the_defaults_the_reference_applies(config):
    derived = {**checkpoint_configs(config), "latent_upsampler": upsampler_config(REFERENCE["upsampler"])}
    # Absent keys take ltx-core's defaults, which differ from diffusers' conversion configs:
    assert config_differences(derived, REAL_CONFIGS) == [
        "transformer.cross_attn_timestep_scale_multiplier: 1000 -> 1",
        "vae.decoder_spatial_padding_mode: 'zeros' -> 'reflect'",
    ]
    config["transformer"]["av_ca_timestep_scale_multiplier"] = 1000
    config["vae"]["spatial_padding_mode"] = "zeros"
    assert config_differences({**checkpoint_configs(config)}, REAL_CONFIGS) == []


def test_decoder_padding_follows_the_metadata_and_ltx_core_defaults(config):
    derived = vae_config(config)
    assert (derived["encoder_spatial_padding_mode"], derived["decoder_spatial_padding_mode"]) == ("zeros", "reflect")
    config["vae"]["spatial_padding_mode"] = "replicate"
    derived = vae_config(config)
    assert (derived["encoder_spatial_padding_mode"], derived["decoder_spatial_padding_mode"]) == ("replicate",) * 2


def test_vocoder_final_activation_is_the_references(config):
    assert vocoder_config(config)["final_act_fn"] == "clamp"  # use_tanh_at_final false, activation applied
    assert vocoder_config(config)["bwe_final_act_fn"] is None  # BWE: none (the sum with the skip is clamped)
    config["vocoder"]["vocoder"]["use_tanh_at_final"] = True
    assert vocoder_config(config)["final_act_fn"] == "tanh"
    del config["vocoder"]["vocoder"]["use_tanh_at_final"]  # ltx-core's default is tanh
    assert vocoder_config(config)["final_act_fn"] == "tanh"


def test_unsupported_architectures_are_named(config):
    broken = copy.deepcopy(config)
    broken["vocoder"].pop("bwe")
    with pytest.raises(CheckpointConfigError, match="bandwidth extension"):
        vocoder_config(broken)
    broken = copy.deepcopy(config)
    broken["transformer"]["qk_norm"] = "layer_norm"
    with pytest.raises(CheckpointConfigError, match="qk_norm"):
        checkpoint_configs(broken)
    broken = copy.deepcopy(config)
    broken["vae"]["decoder_blocks"][0] = ["attn_res_x", {"num_layers": 1, "attention_head_dim": 8}]
    with pytest.raises(CheckpointConfigError, match="attn_res_x"):
        vae_config(broken)
    with pytest.raises(CheckpointConfigError, match="not JSON"):
        parse_metadata_config({"config": "{nope"})
    assert parse_metadata_config(None) == {} and parse_metadata_config({"format": "pt"}) == {}


def test_a_diffusers_layout_vocoder_gets_the_reference_clamp(tiny_weights, tmp_path):
    """diffusers' 2.3 conversion writes final_act_fn null; the loader applies the reference's clamp."""
    import shutil

    from pipeline.weights.loader import load_components

    folder = shutil.copytree(tiny_weights, tmp_path / "diffusers-layout")
    config_path = folder / "vocoder" / "config.json"
    config = json.loads(config_path.read_text())
    config["final_act_fn"] = None
    config_path.write_text(json.dumps(config))
    assert load_components(folder).vocoder.vocoder.final_act_fn == "clamp"
