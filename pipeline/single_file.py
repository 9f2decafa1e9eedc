"""Official Lightricks single-file checkpoints -> the diffusers components we run.

`ltx-2.3-22b-distilled-1.1.safetensors` bundles, under these prefixes,

    model.diffusion_model.*             transformer, and the text connectors' 1-D transformers
    text_embedding_projection.*         the connectors' per-modality input projections
    vae.encoder.* vae.decoder.* vae.per_channel_statistics.*            video VAE
    audio_vae.encoder.* audio_vae.decoder.* audio_vae.per_channel_statistics.*   audio VAE
    vocoder.*                           vocoder with bandwidth extension

and `ltx-2.3-spatial-upscaler-x2-1.1.safetensors` holds the upsampler under diffusers' own
names. Gemma 3 is not in either file; it comes from its own repository, as in the diffusers
layout. The renames are those of diffusers' `scripts/convert_ltx2_to_diffusers.py` (2.3 branch).
They were checked, name by name and shape by shape, against Lightricks' `ltx-core` 1.0.0
modules built on the meta device with the 2.3 configuration (whose parameter counts equal the
diffusers components' exactly); that listing is `tests/fixtures/ltx23_checkpoint_keys.json.gz`.
The renames are plain substring replacements applied in order (order matters, as in the
conversion script); the fixture test pins the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.header_check import (
    CheckReport,
    ComponentReport,
    HeaderError,
    expected_shapes,
    read_header,
)

DIT_PREFIX = "model.diffusion_model."
SINGLE_FILE_COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder")
CONNECTOR_PREFIXES = (
    "video_embeddings_connector", "audio_embeddings_connector", "transformer_1d_blocks",
    "text_embedding_projection", "connectors.", "video_connector", "audio_connector", "text_proj_in",
)

TRANSFORMER_RENAMES = (
    ("patchify_proj", "proj_in"),
    ("audio_patchify_proj", "audio_proj_in"),
    ("av_ca_video_scale_shift_adaln_single", "av_cross_attn_video_scale_shift"),
    ("av_ca_a2v_gate_adaln_single", "av_cross_attn_video_a2v_gate"),
    ("av_ca_audio_scale_shift_adaln_single", "av_cross_attn_audio_scale_shift"),
    ("av_ca_v2a_gate_adaln_single", "av_cross_attn_audio_v2a_gate"),
    ("scale_shift_table_a2v_ca_video", "video_a2v_cross_attn_scale_shift_table"),
    ("scale_shift_table_a2v_ca_audio", "audio_a2v_cross_attn_scale_shift_table"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
    ("audio_prompt_adaln_single", "audio_prompt_adaln"),
    ("prompt_adaln_single", "prompt_adaln"),
)
CONNECTOR_RENAMES = (
    ("connectors.", ""),
    ("video_embeddings_connector", "video_connector"),
    ("audio_embeddings_connector", "audio_connector"),
    ("transformer_1d_blocks", "transformer_blocks"),
    ("text_embedding_projection.audio_aggregate_embed", "audio_text_proj_in"),
    ("text_embedding_projection.video_aggregate_embed", "video_text_proj_in"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
)
VIDEO_VAE_RENAMES = (
    ("down_blocks.0", "down_blocks.0"),
    ("down_blocks.1", "down_blocks.0.downsamplers.0"),
    ("down_blocks.2", "down_blocks.1"),
    ("down_blocks.3", "down_blocks.1.downsamplers.0"),
    ("down_blocks.4", "down_blocks.2"),
    ("down_blocks.5", "down_blocks.2.downsamplers.0"),
    ("down_blocks.6", "down_blocks.3"),
    ("down_blocks.7", "down_blocks.3.downsamplers.0"),
    ("down_blocks.8", "mid_block"),
    ("up_blocks.0", "mid_block"),
    ("up_blocks.1", "up_blocks.0.upsamplers.0"),
    ("up_blocks.2", "up_blocks.0"),
    ("up_blocks.3", "up_blocks.1.upsamplers.0"),
    ("up_blocks.4", "up_blocks.1"),
    ("up_blocks.5", "up_blocks.2.upsamplers.0"),
    ("up_blocks.6", "up_blocks.2"),
    ("up_blocks.7", "up_blocks.3.upsamplers.0"),
    ("up_blocks.8", "up_blocks.3"),
    ("last_time_embedder", "time_embedder"),
    ("last_scale_shift_table", "scale_shift_table"),
    ("res_blocks", "resnets"),
    ("per_channel_statistics.mean-of-means", "latents_mean"),
    ("per_channel_statistics.std-of-means", "latents_std"),
)
AUDIO_VAE_RENAMES = (
    ("per_channel_statistics.mean-of-means", "latents_mean"),
    ("per_channel_statistics.std-of-means", "latents_std"),
)
VOCODER_RENAMES = (
    ("resblocks", "resnets"),
    ("conv_pre", "conv_in"),
    ("conv_post", "conv_out"),
    ("act_post", "act_out"),
    ("downsample.lowpass", "downsample"),
)
# Statistics the diffusers VAE does not keep.
DROPPED = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")


def _replace(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key


def to_diffusers(key: str) -> tuple[str, str] | None:
    """(component, diffusers name) for one checkpoint tensor name; None for dropped statistics."""
    if any(d in key for d in DROPPED):
        return None
    bare = key.removeprefix(DIT_PREFIX)
    for prefix, component, renames in (
        ("vae.", "vae", VIDEO_VAE_RENAMES),
        ("audio_vae.", "audio_vae", AUDIO_VAE_RENAMES),
    ):
        if bare.startswith(prefix):
            return component, _replace(bare[len(prefix):], renames)
    if bare.startswith("vocoder."):
        name = _replace(bare[len("vocoder."):], VOCODER_RENAMES)
        if ".ups." in name and (name.endswith(".weight") or name.endswith(".bias")):
            name = name.replace(".ups.", ".upsamplers.")  # not a plain rename: "ups" is in other names
        return "vocoder", name
    if bare.startswith(CONNECTOR_PREFIXES):
        return "connectors", _replace(bare, CONNECTOR_RENAMES)
    name = _replace(bare, TRANSFORMER_RENAMES)
    for old, new in (("adaln_single.", "time_embed."), ("audio_adaln_single.", "audio_time_embed.")):
        if name.startswith(old):
            name = new + name[len(old):]
    return "transformer", name


def map_names(keys: list[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """({component: {diffusers name: checkpoint name}}, dropped checkpoint names)."""
    mapped: dict[str, dict[str, str]] = {name: {} for name in SINGLE_FILE_COMPONENTS}
    dropped = []
    for key in keys:
        target = to_diffusers(key)
        if target is None:
            dropped.append(key)
        else:
            mapped[target[0]][target[1]] = key
    return mapped, dropped


def model_version(metadata: dict[str, str]) -> str | None:
    """The checkpoint's `model_version` (top level or inside its JSON `config`), if recorded."""
    if "model_version" in metadata:
        return str(metadata["model_version"])
    try:
        config = json.loads(metadata.get("config", "{}"))
    except ValueError:
        return None
    return str(config["model_version"]) if isinstance(config, dict) and "model_version" in config else None


def _meta(name: str, configs: dict[str, dict[str, Any]] | None, include_buffers: bool = True) -> torch.nn.Module:
    from pipeline.real_configs import meta_module

    return meta_module(name, configs, include_buffers)


def check_single_file(
    checkpoint: Path, upsampler: Path | None = None, configs: dict[str, dict[str, Any]] | None = None
) -> CheckReport:
    """`weights check` for the official files: headers only, mapped names vs the configs."""
    checkpoint = Path(checkpoint)
    components = []
    try:
        tensors, metadata, needed = read_header(checkpoint)
    except HeaderError as exc:
        return CheckReport(checkpoint, [ComponentReport("checkpoint", unreadable=[str(exc)])])
    version = model_version(metadata)
    truncated = checkpoint.stat().st_size < needed
    mapped, _ = map_names(list(tensors))
    for name in SINGLE_FILE_COMPONENTS:
        report = ComponentReport(name, files=[checkpoint.name])
        if truncated:
            report.truncated.append(f"{checkpoint.name} ({checkpoint.stat().st_size:,} of {needed:,} bytes)")
        found = {dk: tensors[ck] for dk, ck in mapped[name].items()}
        _compare(report, found, _meta(name, configs))
        report.unexpected = sorted(mapped[name][k] for k in report.unexpected)  # name them as in the file
        components.append(report)
    if version is not None and not version.startswith("2.3"):
        components[0].unreadable.append(f"model_version {version!r} is not LTX-2.3")
    if upsampler is not None:
        components.append(_check_flat_file("latent_upsampler", Path(upsampler), configs))
    return CheckReport(checkpoint, components)


def _check_flat_file(name: str, path: Path, configs) -> ComponentReport:
    report = ComponentReport(name, files=[path.name])
    try:
        tensors, _, needed = read_header(path)
    except HeaderError as exc:
        report.unreadable.append(str(exc))
        return report
    if path.stat().st_size < needed:
        report.truncated.append(f"{path.name} ({path.stat().st_size:,} of {needed:,} bytes)")
    _compare(report, tensors, _meta(name, configs))
    return report


def _compare(report: ComponentReport, found: dict[str, Any], module: torch.nn.Module) -> None:
    want, tied = expected_shapes(module)
    report.expected_count = len(want)
    report.missing = sorted(k for k in want if k not in found and k not in tied)
    report.unexpected = sorted(k for k in found if k not in want)
    report.wrong_shape = sorted((k, found[k].shape, want[k]) for k in want if k in found and found[k].shape != want[k])
    for info in found.values():
        report.dtypes[info.dtype] = report.dtypes.get(info.dtype, 0) + 1


def load_single_file(
    checkpoint: Path,
    upsampler: Path,
    dtype: torch.dtype = torch.bfloat16,
    configs: dict[str, dict[str, Any]] | None = None,
    place: Callable[[str, torch.nn.Module], torch.nn.Module] | None = None,
) -> dict[str, torch.nn.Module]:
    """The six LTX components from the official files, in eval mode, on the CPU (or `place`d).

    Each component is instantiated on the meta device and filled with `load_state_dict(strict=
    True, assign=True)` from the tensors read one component at a time (host RAM holds at most
    the transformer's 38 GB); any name or shape that does not fit raises, naming it.
    """
    from safetensors import safe_open

    from pipeline.components import WeightsError

    modules: dict[str, torch.nn.Module] = {}
    with safe_open(str(checkpoint), framework="pt", device="cpu") as handle:
        version = model_version(handle.metadata() or {})
        if version is not None and not version.startswith("2.3"):
            raise WeightsError(f"{checkpoint}: model_version {version!r} is not LTX-2.3")
        mapped, _ = map_names(list(handle.keys()))
        for name in SINGLE_FILE_COMPONENTS:
            state = {dk: handle.get_tensor(ck).to(dtype) for dk, ck in mapped[name].items()}
            modules[name] = _fill(name, state, configs, checkpoint)
    with safe_open(str(upsampler), framework="pt", device="cpu") as handle:
        state = {key: handle.get_tensor(key).to(dtype) for key in handle.keys()}  # noqa: SIM118
    modules["latent_upsampler"] = _fill("latent_upsampler", state, configs, upsampler)
    if place is not None:
        modules = {name: place(name, module) for name, module in modules.items()}
    return modules


def _fill(name: str, state: dict[str, torch.Tensor], configs, source: Path) -> torch.nn.Module:
    from pipeline.components import WeightsError

    # Parameters on meta (filled by assign below); buffers real, as computed at init.
    module = _meta(name, configs, include_buffers=False)
    _, tied = expected_shapes(module)
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source}: {name} does not fit LTX-2.3: {str(exc).splitlines()[0]}") from exc
    tensors = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    leftover = [k for k, t in tensors if t.device.type == "meta" and k not in tied]
    if leftover:
        raise WeightsError(f"{source}: {name} left unfilled: {', '.join(leftover[:5])}")
    return module.eval().requires_grad_(False)


# ---- a weights directory in the official layout ------------------------------------------------

CHECKPOINT_GLOB = "ltx-2.3-22b-distilled*.safetensors"
UPSAMPLER_GLOB = "ltx-2.3-spatial-upscaler-x2*.safetensors"
SINGLE_FILE_INDEX = {"label": "LTX-2.3 distilled (official single-file checkpoint)", "max_sequence_length": 1024}


def find_single_file(weights_dir: Path) -> tuple[Path, Path] | None:
    """(checkpoint, upsampler) when `weights_dir` holds the official files, else None."""
    weights_dir = Path(weights_dir)
    checkpoints = sorted(weights_dir.glob(CHECKPOINT_GLOB))
    upsamplers = sorted(weights_dir.glob(UPSAMPLER_GLOB))
    if not checkpoints or not upsamplers:
        return None
    return checkpoints[-1], upsamplers[-1]  # the newest revision sorts last (…-1.0, …-1.1)


def load_single_file_components(
    weights_dir: Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    place: Callable[[str, torch.nn.Module], torch.nn.Module] | None = None,
):
    """`Components` from the official files plus `text_encoder/` and `tokenizer/` folders."""
    from transformers import AutoTokenizer, Gemma3ForConditionalGeneration

    from pipeline.components import Components, WeightsError

    weights_dir = Path(weights_dir)
    found = find_single_file(weights_dir)
    missing = [n for n in ("text_encoder", "tokenizer") if not (weights_dir / n).is_dir()]
    if found is None or missing:
        what = [f"{CHECKPOINT_GLOB} and {UPSAMPLER_GLOB}"] if found is None else []
        raise WeightsError(f"{weights_dir} lacks {', '.join(what + missing)} for the single-file layout")
    place = place or (lambda name, module: module.to(device))
    modules = load_single_file(*found, dtype=dtype, place=place)
    text_encoder = Gemma3ForConditionalGeneration.from_pretrained(weights_dir / "text_encoder", torch_dtype=dtype)
    modules["text_encoder"] = place("text_encoder", text_encoder.eval().requires_grad_(False))
    tokenizer = AutoTokenizer.from_pretrained(weights_dir / "tokenizer")
    tokenizer.padding_side = "left"  # Gemma prompts are left-padded for LTX
    return Components(**modules, tokenizer=tokenizer, index=dict(SINGLE_FILE_INDEX))
