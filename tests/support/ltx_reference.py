"""Lightricks' reference code (ltx-core / ltx-pipelines 1.0.0) on a tiny random LTX-2.3 checkpoint.

The checkpoint is built with ltx-core's own configurators from a config in ltx-core's schema
(the 2.3 flags, tiny widths) and saved as ONE safetensors file in the official layout: official
tensor names, the config JSON in the metadata, the vocoder's STFT and mel filter banks filled.
Every parameter is perturbed so that gates, scale-shift tables, registers and biases that a
fresh module initialises to zeros or ones carry non-trivial values. The same file is then
loaded by the reference (`ModelLedger`) and by our official-checkpoint loader.

ltx-core declares torchaudio, which has no build for this project's torch; it is imported only
by the audio *encoder*'s preprocessing (`ltx_core.model.audio_vae.ops`: MelSpectrogram and
resample), which image-to-video never runs. `install_torchaudio_placeholder` registers a module
that raises if anything touches it, so no comparison can silently depend on it.
"""

from __future__ import annotations

import importlib.machinery
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def install_torchaudio_placeholder() -> None:
    """Let ltx-core import without torchaudio; any use of it raises."""
    if "torchaudio" in sys.modules:
        return

    class _Placeholder(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            raise RuntimeError(f"torchaudio.{name} used: the parity suite runs without torchaudio")

    module = _Placeholder("torchaudio")
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    for sub in ("transforms", "functional"):
        sys.modules[f"torchaudio.{sub}"] = module
    sys.modules["torchaudio"] = module


install_torchaudio_placeholder()

from ltx_core.model.audio_vae.model_configurator import (  # noqa: E402
    AudioDecoderConfigurator,
    AudioEncoderConfigurator,
    VocoderConfigurator,
)
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator  # noqa: E402
from ltx_core.model.upsampler.model_configurator import LatentUpsamplerConfigurator  # noqa: E402
from ltx_core.model.video_vae.model_configurator import (  # noqa: E402
    VideoDecoderConfigurator,
    VideoEncoderConfigurator,
)
from ltx_core.text_encoders.gemma.encoders.encoder_configurator import EmbeddingsProcessorConfigurator  # noqa: E402

# ltx-core insists on these (check_config_value); the rest are the 2.3 flags with tiny widths.
CHECKED = dict(
    dropout=0.0, attention_bias=True, num_vector_embeds=None, activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000, use_linear_projection=False, only_cross_attention=False, cross_attention_norm=True,
    double_self_attention=False, upcast_attention=False, standardization_norm="rms_norm",
    norm_elementwise_affine=False, qk_norm="rms_norm", positional_embedding_type="rope",
    use_audio_video_cross_attention=True, share_ff=False, av_cross_ada_norm=True, use_middle_indices_grid=True,
)
# ltx-pipelines fixes the audio latent at 8 channels x 16 mel bins and the vocoder input at 2 x 64
# mel bins (real geometry); the video latent width is a PipelineComponents attribute the harness sets.
VIDEO_LATENT, AUDIO_Z, MEL_BINS = 8, 8, 64
AUDIO_TOKEN = AUDIO_Z * MEL_BINS // 4
TRANSFORMER = dict(
    CHECKED, apply_gated_attention=True, cross_attention_adaln=True, rope_type="split",
    frequencies_precision="float64", caption_proj_before_connector=True, caption_projection_first_linear=False,
    caption_proj_input_norm=False, caption_projection_second_linear=False,
    in_channels=VIDEO_LATENT, out_channels=VIDEO_LATENT, num_layers=2,
    num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
    audio_in_channels=AUDIO_TOKEN, audio_out_channels=AUDIO_TOKEN,
    audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16,
    av_ca_timestep_scale_multiplier=1000,
    connector_num_attention_heads=2, connector_attention_head_dim=16, connector_num_layers=1,
    connector_apply_gated_attention=True, connector_positional_embedding_max_pos=[4096],
    audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
)
VAE = dict(
    latent_channels=VIDEO_LATENT, decoder_base_channels=8, timestep_conditioning=False, causal_decoder=False,
    encoder_blocks=[["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
                    ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 2}],
                    ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                    ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 1}],
                    ["res_x", {"num_layers": 1}]],
    decoder_blocks=[["res_x", {"num_layers": 1}], ["compress_space", {"multiplier": 2}],
                    ["res_x", {"num_layers": 1}], ["compress_time", {"multiplier": 2}],
                    ["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 1}],
                    ["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 2}],
                    ["res_x", {"num_layers": 1}]],
    # No `spatial_padding_mode`: ltx-core then pads the encoder with zeros and the decoder by
    # reflection; the loader must derive both from the same absence.
)
DDCONFIG = dict(ch=AUDIO_TOKEN, out_ch=2, ch_mult=[1, 1, 1], num_res_blocks=1, attn_resolutions=[], resolution=256,
                z_channels=AUDIO_Z, norm_type="pixel", causality_axis="height", dropout=0.0,
                mid_block_add_attention=False, mel_bins=MEL_BINS, double_z=True, in_channels=2)
AMP = dict(resblock="AMP1", stereo=True, activation="snakebeta", use_tanh_at_final=False, use_bias_at_final=False,
           resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]])
VOCODER = dict(
    vocoder=dict(AMP, upsample_rates=[8, 5, 4], upsample_kernel_sizes=[16, 11, 8], upsample_initial_channel=32),
    bwe=dict(AMP, upsample_rates=[6, 5, 8], upsample_kernel_sizes=[12, 11, 16], upsample_initial_channel=32,
             input_sampling_rate=16000, output_sampling_rate=48000, n_fft=512, hop_length=80, num_mels=MEL_BINS),
)
CONFIG: dict[str, Any] = {
    "model_version": "2.3.0",
    "transformer": TRANSFORMER,
    "vae": VAE,
    "vocoder": VOCODER,
    "audio_vae": {"model": {"params": {"ddconfig": DDCONFIG, "sampling_rate": 16000}},
                  "preprocessing": {"stft": {"hop_length": 160, "causal": True}}},
}
UPSAMPLER = dict(in_channels=VIDEO_LATENT, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=True,
                 temporal_upsample=False, spatial_scale=2.0, rational_resampler=False)
CHECKPOINT_NAME = "ltx-2.3-22b-distilled-1.1.safetensors"
UPSAMPLER_NAME = "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"


def _perturb(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every parameter non-trivial values: zero-initialised gates and tables too."""
    with torch.no_grad():
        for param in module.parameters():
            value = param.detach().float()
            if not torch.isfinite(value).all() or value.abs().max() > 100:
                # Some tables are created with torch.empty (filled by a checkpoint): draw them afresh.
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
                continue
            scale = value.std().item() if param.numel() > 1 else 0.0
            scale = scale if math.isfinite(scale) and scale > 0 else 0.1
            param.copy_(value + torch.randn(param.shape, generator=generator) * (0.5 * scale))


def _statistics(latent_channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "mean-of-means": torch.randn(latent_channels, generator=generator) * 0.2,
        "std-of-means": torch.rand(latent_channels, generator=generator) + 0.5,
    }


def _stft_bases(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary DFT rows times a Hann window, stacked as conv1d filters (2F, 1, n_fft)."""
    n_freqs = n_fft // 2 + 1
    t = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_freqs, dtype=torch.float64)[:, None]
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * math.pi * k * t / n_fft
    forward = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
    inverse = torch.linalg.pinv(forward).T
    return forward[:, None, :].float().contiguous(), inverse[:, None, :].float().contiguous()


def _mel_filters(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK mel filter bank (n_mels, n_fft // 2 + 1)."""
    def to_mel(f: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = torch.linspace(0, to_mel(torch.tensor(sample_rate / 2.0)).item(), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (edges / 2595.0) - 1.0)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rise = (freqs - lower) / (centre - lower)
    fall = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rise, fall), min=0).float()


def reference_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the bundled checkpoint, under its official name, from ltx-core's modules."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # module initialisers draw from the global generator
    out: dict[str, torch.Tensor] = {}

    def put(prefix: str, module: torch.nn.Module, skip_stats: bool = False) -> None:
        _perturb(module, generator)
        for key, value in module.state_dict().items():
            if skip_stats and key.startswith("per_channel_statistics."):
                continue
            out[prefix + key] = value.detach().float().contiguous()

    put("model.diffusion_model.", LTXModelConfigurator.from_config(CONFIG))
    processor = EmbeddingsProcessorConfigurator.from_config(CONFIG)
    _perturb(processor, generator)
    prefixes = {"feature_extractor": "text_embedding_projection.",
                "video_connector": "model.diffusion_model.video_embeddings_connector.",
                "audio_connector": "model.diffusion_model.audio_embeddings_connector."}
    for key, value in processor.state_dict().items():
        head, rest = key.split(".", 1)
        out[prefixes[head] + rest] = value.detach().float().contiguous()
    for top, encoder, decoder, channels in (
        ("vae", VideoEncoderConfigurator, VideoDecoderConfigurator, VIDEO_LATENT),
        ("audio_vae", AudioEncoderConfigurator, AudioDecoderConfigurator, AUDIO_TOKEN),
    ):
        put(f"{top}.encoder.", encoder.from_config(CONFIG), skip_stats=True)
        put(f"{top}.decoder.", decoder.from_config(CONFIG), skip_stats=True)
        for key, value in _statistics(channels, generator).items():
            out[f"{top}.per_channel_statistics.{key}"] = value
    vocoder = VocoderConfigurator.from_config(CONFIG)
    put("vocoder.", vocoder)
    bwe = VOCODER["bwe"]
    forward, inverse = _stft_bases(bwe["n_fft"])
    out["vocoder.mel_stft.stft_fn.forward_basis"] = forward
    out["vocoder.mel_stft.stft_fn.inverse_basis"] = inverse
    out["vocoder.mel_stft.mel_basis"] = _mel_filters(bwe["num_mels"], bwe["n_fft"], bwe["input_sampling_rate"])
    return out


def build_reference_checkpoint(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the tiny official-layout checkpoint and upscaler into `directory`; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint, upsampler = directory / CHECKPOINT_NAME, directory / UPSAMPLER_NAME
    save_file(reference_state_dict(seed), checkpoint, metadata={"config": json.dumps(CONFIG)})
    torch.manual_seed(seed + 1)
    module = LatentUpsamplerConfigurator.from_config(UPSAMPLER)
    _perturb(module, torch.Generator().manual_seed(seed + 1))
    state = {k: v.detach().float().contiguous() for k, v in module.state_dict().items()}
    save_file(state, upsampler, metadata={"config": json.dumps(UPSAMPLER)})
    return checkpoint, upsampler


def reference_ledger(checkpoint: Path, upsampler: Path):
    """ltx-pipelines' own loader of the same files, in float32 on the CPU."""
    from ltx_pipelines.utils import ModelLedger

    return ModelLedger(dtype=torch.float32, device=torch.device("cpu"), checkpoint_path=str(checkpoint),
                       spatial_upsampler_path=str(upsampler))


# ---- LoRA adapters ---------------------------------------------------------------------------------


def build_reference_lora(path: Path, rank: int = 4, seed: int = 21, every: int = 1, scale: float = 0.5) -> Path:
    """A tiny LoRA in Lightricks' official layout for the tiny checkpoint, saved as one safetensors file.

    `diffusion_model.<module>.lora_A.weight` (rank x in) and `.lora_B.weight` (out x rank) for every
    `every`-th linear layer of ltx-core's transformer (module names from ltx-core itself). B is not
    zero (a trained LoRA's is not), so the adapter changes every pass.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(CONFIG)
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    tensors = {}
    for name, module in linears[::every]:
        tensors[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(rank, module.in_features,
                                                                       generator=generator) * scale
        tensors[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(module.out_features, rank,
                                                                       generator=generator) * scale / rank
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path)
    return path


def float32_lora_fusion():
    """ltx-core's `apply_loras` fuses into bfloat16 and fp8 weights only (float32 raises "Unsupported dtype").

    For a float32 comparison this context routes float32 weights through its own bfloat16 fusion
    (`_fuse_delta_with_bfloat16`: `deltas.add_(weight)`, dtype-agnostic); the deltas themselves
    (`_prepare_deltas`: sum of `(B * strength) @ A`) are ltx-core's, unchanged.
    """
    from contextlib import contextmanager

    import ltx_core.loader.fuse_loras as fuse

    @contextmanager
    def patched():
        original = fuse._fuse_deltas

        def fuse_deltas(deltas, weight, key, sd, target_dtype, *rest):
            if deltas is not None and weight.dtype == torch.float32:
                return fuse._fuse_delta_with_bfloat16(deltas, weight, key, target_dtype)
            return original(deltas, weight, key, sd, target_dtype, *rest)

        fuse._fuse_deltas = fuse_deltas
        try:
            yield
        finally:
            fuse._fuse_deltas = original

    return patched()


def reference_lora_transformer(checkpoint: Path, upsampler: Path, loras: list[tuple[Path, float]]):
    """ltx-pipelines' transformer with `loras` fused by ltx-core (`ModelLedger(loras=...)`), float32 on the CPU."""
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps
    from ltx_pipelines.utils import ModelLedger

    ledger = ModelLedger(dtype=torch.float32, device=torch.device("cpu"), checkpoint_path=str(checkpoint),
                         spatial_upsampler_path=str(upsampler),
                         loras=tuple(LoraPathStrengthAndSDOps(str(path), strength, LTXV_LORA_COMFY_RENAMING_MAP)
                                     for path, strength in loras))
    with float32_lora_fusion():
        return ledger.transformer()
