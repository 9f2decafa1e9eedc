"""The real LTX-2.3 configurations: parameter counts on the meta device, and tiny-model parity."""

from __future__ import annotations

import pytest

from pipeline.weights.registry import REAL_CONFIGS, REFERENCE_PARAMS, meta_module, param_count
from pipeline.weights.tiny import TINY_CONFIGS

# Keys that only set a width, depth or count: the tiny model may (must) shrink these.
# Everything else — booleans, rope type, activations, padding modes, compression and
# sampling factors, scales — has to be the real value, or the tiny model tests another model.
SIZE_KEYS = {
    "transformer": {
        "in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "cross_attention_dim",
        "audio_in_channels", "audio_out_channels", "audio_num_attention_heads", "audio_attention_head_dim",
        "audio_cross_attention_dim", "num_layers", "caption_channels",
    },
    "connectors": {
        "caption_channels", "text_proj_in_factor", "video_connector_num_attention_heads",
        "video_connector_attention_head_dim", "video_connector_num_layers", "audio_connector_num_attention_heads",
        "audio_connector_attention_head_dim", "audio_connector_num_layers", "video_hidden_dim", "audio_hidden_dim",
    },
    "vae": {"latent_channels", "block_out_channels", "decoder_block_out_channels", "layers_per_block",
            "decoder_layers_per_block"},
    "audio_vae": {"base_channels", "num_res_blocks", "latent_channels", "mel_bins"},
    # The tiny vocoder keeps the real total up-sampling (160x, then 240x over hop 80) in fewer stages.
    "vocoder": {
        "in_channels", "hidden_channels", "upsample_kernel_sizes", "upsample_factors", "resnet_kernel_sizes",
        "resnet_dilations", "bwe_in_channels", "bwe_hidden_channels", "bwe_upsample_kernel_sizes",
        "bwe_upsample_factors", "bwe_resnet_kernel_sizes", "bwe_resnet_dilations", "num_mel_channels",
    },
    "latent_upsampler": {"in_channels", "mid_channels", "num_blocks_per_stage"},
}

# Found by test_tiny_model_carries_the_real_architecture_flags; reported to the lead (tiny.py is
# not ours to edit). strict=True: once tiny.py is fixed these XPASS and fail, so drop the marks.
KNOWN_TINY_MISMATCHES: dict[str, str] = {}  # the tiny configs are the real ones with sizes shrunk


@pytest.mark.parametrize("name", [*REAL_CONFIGS, "text_encoder"])
def test_meta_instantiation_matches_reference_parameter_count(name):
    module = meta_module(name)
    # Nothing was allocated: every tensor lives on the meta device.
    assert all(t.device.type == "meta" for t in module.state_dict().values())
    count = param_count(module)
    reference = REFERENCE_PARAMS[name]
    # The reference figures have 2-4 significant digits ("≈ 0.73B"); "≈ 12B" is coarser still.
    tolerance = 0.03 if name == "text_encoder" else 0.01
    assert abs(count - reference) / reference < tolerance, f"{name}: {count:,} vs ≈{reference:,.0f}"


def test_transformer_and_connectors_make_the_22b():
    total = param_count(meta_module("transformer")) + param_count(meta_module("connectors"))
    assert 22.0e9 < total < 22.3e9


def test_real_geometry_flags():
    t, c = REAL_CONFIGS["transformer"], REAL_CONFIGS["connectors"]
    assert (t["num_layers"], t["num_attention_heads"] * t["attention_head_dim"]) == (48, 4096)
    assert t["audio_num_attention_heads"] * t["audio_attention_head_dim"] == 2048
    assert c["video_hidden_dim"] == t["cross_attention_dim"] and c["audio_hidden_dim"] == t["audio_cross_attention_dim"]
    assert c["caption_channels"] == t["caption_channels"] == 3840
    vae = meta_module("vae")
    assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (32, 8)
    voc = REAL_CONFIGS["vocoder"]
    assert voc["output_sampling_rate"] == 48000


def _params(name):
    mark = pytest.mark.xfail(reason=KNOWN_TINY_MISMATCHES[name], strict=True) if name in KNOWN_TINY_MISMATCHES else ()
    return pytest.param(name, marks=mark)


@pytest.mark.parametrize("name", [_params(n) for n in REAL_CONFIGS])
def test_tiny_model_carries_the_real_architecture_flags(name):
    # Compare effective configs (class defaults filled in), so a flag the tiny config merely
    # forgets is caught as well as one it sets wrong.
    real = dict(meta_module(name).config)
    tiny = dict(meta_module(name, TINY_CONFIGS).config)
    mismatched = {
        key: (value, tiny.get(key))
        for key, value in real.items()
        if not key.startswith("_") and key not in SIZE_KEYS[name] and tiny.get(key) != value
    }
    assert mismatched == {}, f"{name}: real vs tiny {mismatched}"


def test_tiny_vocoder_keeps_the_real_total_upsampling():
    import math

    for key in ("upsample_factors", "bwe_upsample_factors"):
        assert math.prod(TINY_CONFIGS["vocoder"][key]) == math.prod(REAL_CONFIGS["vocoder"][key])
