"""Diffusers component configs derived from an official checkpoint's own metadata `config`.

Lightricks' single-file checkpoints carry their architecture as JSON in the safetensors
metadata (`config`: sections `transformer`, `vae`, `audio_vae`, `vocoder`; the upsampler file
a flat dict). Lightricks' reference loader (`ltx-core` 1.0.0, its `*Configurator.from_config`)
builds every module from that JSON and fills absent keys with its own defaults; some of those
defaults differ from diffusers' 2.3 conversion configs, so guessing is not an option:

* the 16 kHz vocoder stage applies its final activation (`apply_final_activation=True`), a
  clamp to [-1, 1] when `use_tanh_at_final` is false (diffusers' 2.3 config: no activation);
* the video decoder pads spatially with `spatial_padding_mode`, default `"reflect"` (the encoder
  defaults to `"zeros"`);
* the audio-video cross-attention timestep factor `av_ca_timestep_scale_multiplier` defaults to 1;
* the video decoder is timestep-conditioned unless `timestep_conditioning` says otherwise.

This module re-types those rules (facts, not code, from ltx-core) as pure functions from the
metadata to the keyword arguments of the diffusers classes in `pipeline.weights.registry`, so the
modules we run compute what the reference computes for the same file. `config_differences`
names every value that differs from `pipeline.weights.registry` (logged at load, shown by
`weights check`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pipeline.geometry import VAE_SPATIAL, VAE_TEMPORAL

# Gemma 3 12B feeds the text connectors with all of its hidden states (48 layers + embeddings)
# of width 3840; ltx-core fixes these from its own Gemma config, not from the checkpoint.
GEMMA_HIDDEN = 3840
GEMMA_STATES = 49
CONNECTOR_REGISTERS = 128  # ltx-core's Embeddings1DConnector default; its configurator never overrides it
# Vocoder input: ltx-core hard-codes 128 channels (stereo x 64 mel bins).
VOCODER_IN_CHANNELS = 128
STEREO = 2

_QK_NORM = {"rms_norm": "rms_norm_across_heads"}
_DOWNSAMPLE = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
_UPSAMPLE = {"compress_space": "spatial", "compress_time": "temporal", "compress_all": "spatiotemporal"}


class CheckpointConfigError(ValueError):
    """The checkpoint's metadata describes an architecture the diffusers classes cannot express."""


def parse_metadata_config(metadata: dict[str, str] | None) -> dict[str, Any]:
    """The JSON `config` of a safetensors header's metadata ({} when absent, as ltx-core reads it)."""
    if not metadata or "config" not in metadata:
        return {}
    try:
        config = json.loads(metadata["config"])
    except ValueError as exc:
        raise CheckpointConfigError(f"metadata 'config' is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointConfigError("metadata 'config' is not a JSON object")
    return config


def transformer_config(config: dict[str, Any]) -> dict[str, Any]:
    """`LTX2VideoTransformer3DModel` kwargs from the checkpoint's `transformer` section."""
    t = config.get("transformer", {})
    _require(t, "qk_norm", "rms_norm", "transformer")
    _require(t, "activation_fn", "gelu-approximate", "transformer")
    _require(t, "norm_elementwise_affine", False, "transformer")
    _require(t, "use_audio_video_cross_attention", True, "transformer")
    max_pos = t.get("positional_embedding_max_pos", [20, 2048, 2048])
    audio_max_pos = t.get("audio_positional_embedding_max_pos", [20])
    gated = bool(t.get("apply_gated_attention", False))
    cross_mod = bool(t.get("cross_attention_adaln", False))
    audio_vae = _audio_vae_fields(config)
    return dict(
        in_channels=t.get("in_channels", 128),
        out_channels=t.get("out_channels", 128),
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=t.get("num_attention_heads", 32),
        attention_head_dim=t.get("attention_head_dim", 128),
        cross_attention_dim=t.get("cross_attention_dim", 4096),
        vae_scale_factors=(VAE_TEMPORAL, VAE_SPATIAL, VAE_SPATIAL),
        pos_embed_max_pos=max_pos[0],
        base_height=max_pos[1],
        base_width=max_pos[2],
        gated_attn=gated,
        cross_attn_mod=cross_mod,
        audio_in_channels=t.get("audio_in_channels", 128),
        audio_out_channels=t.get("audio_out_channels", 128),
        audio_patch_size=1,
        audio_patch_size_t=1,
        audio_num_attention_heads=t.get("audio_num_attention_heads", 32),
        audio_attention_head_dim=t.get("audio_attention_head_dim", 64),
        audio_cross_attention_dim=t.get("audio_cross_attention_dim", 2048),
        audio_scale_factor=4,
        audio_pos_embed_max_pos=audio_max_pos[0],
        audio_sampling_rate=audio_vae["sample_rate"],
        audio_hop_length=audio_vae["mel_hop_length"],
        audio_gated_attn=gated,
        audio_cross_attn_mod=cross_mod,
        num_layers=t.get("num_layers", 48),
        activation_fn="gelu-approximate",
        qk_norm=_QK_NORM[t.get("qk_norm", "rms_norm")],
        norm_elementwise_affine=False,
        norm_eps=t.get("norm_eps", 1e-6),
        caption_channels=GEMMA_HIDDEN,
        attention_bias=t.get("attention_bias", True),
        attention_out_bias=True,
        rope_theta=float(t.get("positional_embedding_theta", 10000.0)),
        rope_double_precision=t.get("frequencies_precision", False) == "float64",
        causal_offset=1,
        timestep_scale_multiplier=t.get("timestep_scale_multiplier", 1000),
        cross_attn_timestep_scale_multiplier=t.get("av_ca_timestep_scale_multiplier", 1),
        rope_type=t.get("rope_type", "interleaved"),
        use_prompt_embeddings=not t.get("caption_proj_before_connector", False),
        perturbed_attn=True,
    )


def connectors_config(config: dict[str, Any]) -> dict[str, Any]:
    """`LTX2TextConnectors` kwargs (ltx-core's embeddings processor: feature extractor + 2 connectors)."""
    t = config.get("transformer", {})
    if not t.get("caption_proj_before_connector", False):
        raise CheckpointConfigError("the text projection sits in the transformer (LTX-2.0 layout), not LTX-2.3")
    heads = t.get("connector_num_attention_heads", 30)
    head_dim = t.get("connector_attention_head_dim", 128)
    layers = t.get("connector_num_layers", 2)
    gated = bool(t.get("connector_apply_gated_attention", False))
    return dict(
        caption_channels=GEMMA_HIDDEN,
        text_proj_in_factor=GEMMA_STATES,
        video_connector_num_attention_heads=heads,
        video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=layers,
        video_connector_num_learnable_registers=CONNECTOR_REGISTERS,
        video_gated_attn=gated,
        audio_connector_num_attention_heads=t.get("audio_connector_num_attention_heads", heads),
        audio_connector_attention_head_dim=t.get("audio_connector_attention_head_dim", head_dim),
        audio_connector_num_layers=t.get("audio_connector_num_layers", layers),
        audio_connector_num_learnable_registers=CONNECTOR_REGISTERS,
        audio_gated_attn=gated,
        connector_rope_base_seq_len=t.get("connector_positional_embedding_max_pos", [1])[0],
        rope_theta=10000.0,
        rope_double_precision=t.get("frequencies_precision", False) == "float64",
        causal_temporal_positioning=False,
        rope_type=t.get("rope_type", "interleaved"),
        per_modality_projections=True,
        video_hidden_dim=t.get("num_attention_heads", 32) * t.get("attention_head_dim", 128),
        audio_hidden_dim=t.get("audio_num_attention_heads", 32) * t.get("audio_attention_head_dim", 64),
        proj_bias=True,
    )


def vae_config(config: dict[str, Any]) -> dict[str, Any]:
    """`AutoencoderKLLTX2Video` kwargs from ltx-core's block lists (`encoder_blocks`, `decoder_blocks`)."""
    v = config.get("vae", {})
    if v.get("dims", 3) != 3 or v.get("norm_layer", "pixel_norm") != "pixel_norm":
        raise CheckpointConfigError("video VAE: only 3-D convolutions with pixel norm are supported")
    if v.get("latent_log_var", "uniform") != "uniform":
        raise CheckpointConfigError(f"video VAE: latent_log_var {v.get('latent_log_var')!r} is not 'uniform'")
    latent = v.get("latent_channels", 128)
    enc_layers, enc_types, enc_channels = _encoder_stages(v.get("encoder_blocks", []), latent)
    dec_layers, dec_types, dec_in, factors, residual, noise = _decoder_stages(
        v.get("decoder_blocks", []), v.get("decoder_base_channels", 128) * 8
    )
    # ltx-core reads one `spatial_padding_mode` for both halves but defaults them differently.
    padding = v.get("spatial_padding_mode")
    return dict(
        in_channels=v.get("in_channels", 3),
        out_channels=v.get("out_channels", 3),
        latent_channels=latent,
        block_out_channels=tuple(enc_channels),
        down_block_types=("LTX2VideoDownBlock3D",) * len(enc_channels),
        decoder_block_out_channels=tuple(reversed(dec_in)),
        layers_per_block=tuple(enc_layers),
        decoder_layers_per_block=tuple(reversed(dec_layers)),
        spatio_temporal_scaling=(True,) * len(enc_channels),
        decoder_spatio_temporal_scaling=(True,) * len(dec_in),
        decoder_inject_noise=tuple(reversed(noise)),
        downsample_type=tuple(enc_types),
        upsample_type=tuple(dec_types),
        upsample_residual=tuple(reversed(residual)),
        upsample_factor=tuple(reversed(factors)),
        timestep_conditioning=bool(v.get("timestep_conditioning", True)),
        patch_size=v.get("patch_size", 4),
        patch_size_t=1,
        resnet_norm_eps=1e-6,
        encoder_causal=True,
        decoder_causal=bool(v.get("causal_decoder", False)),
        encoder_spatial_padding_mode=padding or "zeros",
        decoder_spatial_padding_mode=padding or "reflect",
        spatial_compression_ratio=32,
        temporal_compression_ratio=8,
    )


def _encoder_stages(blocks: list, latent: int) -> tuple[list[int], list[str], list[int]]:
    """Encoder: res_x(n0), down(m1), res_x(n1), ..., res_x(n_last) -> layers, down types, channels."""
    layers, types, channels = [], [], []
    width = latent
    for name, params in blocks:
        params = {"num_layers": params} if isinstance(params, int) else params
        if name == "res_x":
            layers.append(params["num_layers"])
        elif name in _DOWNSAMPLE:
            if len(layers) != len(types) + 1:
                layers.append(0)  # two compressions in a row: a stage without resnets
            width *= params.get("multiplier", 2)
            types.append(_DOWNSAMPLE[name])
            channels.append(width)
        else:
            raise CheckpointConfigError(f"video VAE encoder block {name!r} is not supported")
    if len(layers) != len(types) + 1:
        layers.append(0)
    return layers, types, channels


def _decoder_stages(blocks: list, width: int):
    """Decoder (ltx-core builds it from the reversed list): mid res_x, then (upsampler, res_x) pairs."""
    layers, types, widths, factors, residual, noise = [], [], [], [], [], []
    for name, params in reversed(blocks):
        params = {"num_layers": params} if isinstance(params, int) else params
        if name == "res_x":
            layers.append(params["num_layers"])
            noise.append(bool(params.get("inject_noise", False)))
        elif name in _UPSAMPLE:
            if len(layers) != len(types) + 1:
                layers.append(0)
                noise.append(False)
            factor = params.get("multiplier", 1)
            types.append(_UPSAMPLE[name])
            widths.append(width)
            factors.append(factor)
            residual.append(bool(params.get("residual", False)))
            width //= factor
        else:
            raise CheckpointConfigError(f"video VAE decoder block {name!r} is not supported")
    if len(layers) != len(types) + 1:
        layers.append(0)
        noise.append(False)
    return layers, types, widths, factors, residual, noise


def _audio_vae_fields(config: dict[str, Any]) -> dict[str, Any]:
    a = config.get("audio_vae", {})
    params = a.get("model", {}).get("params", {})
    dd = params.get("ddconfig", {})
    stft = a.get("preprocessing", {}).get("stft", {})
    mel = a.get("preprocessing", {}).get("mel", {})
    mel_bins = dd.get("mel_bins") or mel.get("n_mel_channels") or a.get("variables", {}).get("mel_bins") or 64
    return dict(
        dd=dd,
        sample_rate=params.get("sampling_rate", 16000),
        mel_hop_length=stft.get("hop_length", 160),
        is_causal=stft.get("causal", True),
        mel_bins=mel_bins,
    )


def audio_vae_config(config: dict[str, Any]) -> dict[str, Any]:
    """`AutoencoderKLLTX2Audio` kwargs from the checkpoint's `audio_vae.model.params.ddconfig`."""
    fields = _audio_vae_fields(config)
    dd = fields["dd"]
    attn = dd.get("attn_resolutions", [8, 16, 32])
    return dict(
        base_channels=dd.get("ch", 128),
        output_channels=dd.get("out_ch", 2),
        ch_mult=tuple(dd.get("ch_mult", (1, 2, 4))),
        num_res_blocks=dd.get("num_res_blocks", 2),
        attn_resolutions=tuple(attn) if attn else None,
        in_channels=dd.get("in_channels", 2),
        resolution=dd.get("resolution", 256),
        latent_channels=dd.get("z_channels", 8),
        norm_type=dd.get("norm_type", "pixel"),
        causality_axis=dd.get("causality_axis", "height"),
        dropout=dd.get("dropout", 0.0),
        mid_block_add_attention=dd.get("mid_block_add_attention", True),
        sample_rate=fields["sample_rate"],
        mel_hop_length=fields["mel_hop_length"],
        is_causal=fields["is_causal"],
        mel_bins=fields["mel_bins"],
        double_z=dd.get("double_z", True),
    )


def _generator_fields(cfg: dict[str, Any], prefix: str, final_act: str | None) -> dict[str, Any]:
    if cfg.get("resblock", "1") != "AMP1" or cfg.get("activation", "snake") != "snakebeta":
        raise CheckpointConfigError("vocoder: only AMP1 blocks with snakebeta activations (LTX-2.3) are supported")
    if not cfg.get("stereo", True):
        raise CheckpointConfigError("vocoder: only stereo checkpoints are supported")
    return {
        f"{prefix}in_channels": VOCODER_IN_CHANNELS,
        f"{prefix}hidden_channels": cfg.get("upsample_initial_channel", 1024),
        f"{prefix}out_channels": STEREO,
        f"{prefix}upsample_kernel_sizes": list(cfg.get("upsample_kernel_sizes", [16, 15, 8, 4, 4])),
        f"{prefix}upsample_factors": list(cfg.get("upsample_rates", [6, 5, 2, 2, 2])),
        f"{prefix}resnet_kernel_sizes": list(cfg.get("resblock_kernel_sizes", [3, 7, 11])),
        f"{prefix}resnet_dilations": [list(d) for d in cfg.get("resblock_dilation_sizes", [[1, 3, 5]] * 3)],
        f"{prefix}act_fn": "snakebeta",
        f"{prefix}leaky_relu_negative_slope": 0.1,
        f"{prefix}antialias": True,  # AMP1 blocks are anti-aliased (ratio 2, kernel 12) in ltx-core
        f"{prefix}antialias_ratio": 2,
        f"{prefix}antialias_kernel_size": 12,
        f"{prefix}final_act_fn": final_act,
        f"{prefix}final_bias": bool(cfg.get("use_bias_at_final", True)),
    }


def vocoder_config(config: dict[str, Any]) -> dict[str, Any]:
    """`LTX2VocoderWithBWE` kwargs from the checkpoint's `vocoder` section (`vocoder` + `bwe`)."""
    cfg = config.get("vocoder", {})
    if "bwe" not in cfg:
        raise CheckpointConfigError("vocoder has no bandwidth extension ('bwe'): not an LTX-2.3 checkpoint")
    stage, bwe = cfg.get("vocoder", {}), cfg["bwe"]
    # The 16 kHz stage keeps ltx-core's final activation (tanh, or a clamp when use_tanh_at_final
    # is false); the BWE generator has none (its sum with the skip path is clamped by the class).
    stage_act = "tanh" if stage.get("use_tanh_at_final", True) else "clamp"
    return dict(
        **_generator_fields(stage, "", stage_act),
        **_generator_fields(bwe, "bwe_", None),
        filter_length=bwe["n_fft"],
        hop_length=bwe["hop_length"],
        window_length=bwe["n_fft"],
        num_mel_channels=bwe["num_mels"],
        input_sampling_rate=bwe["input_sampling_rate"],
        output_sampling_rate=bwe["output_sampling_rate"],
    )


def upsampler_config(config: dict[str, Any]) -> dict[str, Any]:
    """`LTX2LatentUpsamplerModel` kwargs from the upscaler file's (flat) metadata config."""
    return dict(
        in_channels=config.get("in_channels", 128),
        mid_channels=config.get("mid_channels", 512),
        num_blocks_per_stage=config.get("num_blocks_per_stage", 4),
        dims=config.get("dims", 3),
        spatial_upsample=config.get("spatial_upsample", True),
        temporal_upsample=config.get("temporal_upsample", False),
        rational_spatial_scale=float(config.get("spatial_scale", 2.0)),
        use_rational_resampler=bool(config.get("rational_resampler", False)),
    )


def checkpoint_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every component of the bundled checkpoint, as diffusers kwargs."""
    return {
        "transformer": transformer_config(config),
        "connectors": connectors_config(config),
        "vae": vae_config(config),
        "audio_vae": audio_vae_config(config),
        "vocoder": vocoder_config(config),
    }


def config_differences(derived: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]]) -> list[str]:
    """'component.key: reference -> derived' for every value that differs (tuples and lists alike)."""
    rows = []
    for name, config in derived.items():
        known = reference.get(name, {})
        for key in sorted(set(config) | set(known)):
            mine, theirs = _plain(config.get(key)), _plain(known.get(key))
            if mine != theirs and not _close(mine, theirs):
                rows.append(f"{name}.{key}: {theirs!r} -> {mine!r}")
    return rows


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _close(a: Any, b: Any) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)


def _require(section: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key in section and section[key] != value:
        raise CheckpointConfigError(f"{where}.{key} is {section[key]!r}; only {value!r} is supported")
