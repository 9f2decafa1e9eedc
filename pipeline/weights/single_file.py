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
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_module_tensor_to_device
from safetensors import safe_open

from pipeline.errors import WeightsError
from pipeline.weights.checkpoint_config import (
    CheckpointConfigError,
    checkpoint_configs,
    config_differences,
    parse_metadata_config,
    upsampler_config,
)
from pipeline.weights.inspect import (
    CheckReport,
    ComponentReport,
    HeaderError,
    expected_shapes,
    read_header,
)
from pipeline.weights.lock import release_of_name
from pipeline.weights.registry import REAL_CONFIGS, meta_module

log = logging.getLogger("ltx_server.weights")

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


def derived_configs(metadata: dict[str, str], upsampler_metadata: dict[str, str] | None) -> dict[str, dict[str, Any]]:
    """Every component's diffusers config from the files' metadata, as ltx-core reads it (checkpoint_config)."""
    try:
        configs = checkpoint_configs(parse_metadata_config(metadata))
        if upsampler_metadata is not None:
            configs["latent_upsampler"] = upsampler_config(parse_metadata_config(upsampler_metadata))
    except CheckpointConfigError as exc:
        raise WeightsError(f"checkpoint metadata: {exc}") from exc
    return configs


def single_file_configs(checkpoint: Path, upsampler: Path | None = None) -> dict[str, dict[str, Any]]:
    """`derived_configs` of the official files, from their headers alone."""
    up_metadata = read_header(Path(upsampler))[1] if upsampler is not None else None
    return derived_configs(read_header(Path(checkpoint))[1], up_metadata)


def log_config_differences(configs: dict[str, dict[str, Any]], source: Path) -> list[str]:
    """Log (and return) where the checkpoint's configs differ from diffusers' 2.3 conversion configs."""
    rows = config_differences(configs, REAL_CONFIGS)
    for row in rows:
        log.info("%s: from its metadata (as the reference reads it): %s", Path(source).name, row)
    return rows


def _meta(name: str, configs: dict[str, dict[str, Any]] | None, include_buffers: bool = True) -> torch.nn.Module:
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
    derived = configs is None
    if derived:  # check against the architecture the files' metadata describes, as the loader builds it
        try:
            configs = single_file_configs(checkpoint, upsampler)
        except (WeightsError, HeaderError) as exc:
            return CheckReport(checkpoint, [ComponentReport("checkpoint", unreadable=[str(exc)])])
    for name in SINGLE_FILE_COMPONENTS:
        report = ComponentReport(name, files=[checkpoint.name])
        if derived:
            report.notes = [
                f"{row} (diffusers' 2.3 conversion -> this file's metadata as the reference reads it; used)"
                for row in config_differences({name: configs[name]}, REAL_CONFIGS)
            ]
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


MAPPED_WINDOW = 256 * 1024 * 1024  # bytes of a file kept mapped while tensors are copied off the host


def load_single_file(
    checkpoint: Path,
    upsampler: Path,
    dtype: torch.dtype = torch.bfloat16,
    configs: dict[str, dict[str, Any]] | None = None,
    place: Callable[[str, torch.nn.Module], torch.nn.Module] | None = None,
    *,
    device_for: Callable[[str], torch.device | str] | None = None,
    window_bytes: int = MAPPED_WINDOW,
) -> dict[str, torch.nn.Module]:
    """The six LTX components from the official files, in eval mode, each `place`d once filled.

    Each component is instantiated on the meta device and filled tensor by tensor from the
    memory-mapped file, every tensor converted straight to `dtype` on `device_for(name)`: by
    default the `device_for` of `place` when it has one (`pipeline.placement.apply.placer`'s does),
    else the CPU. Loading onto a GPU therefore holds at most `window_bytes` of mapped file
    pages on the host (and one tensor, if it must be converted), never a component. Names and
    shapes of every component are checked against the architecture before any data is read: a
    missing, unexpected or misshapen tensor raises `WeightsError` naming it and the file.
    """
    device_for = device_for or getattr(place, "device_for", None) or (lambda name: "cpu")
    tensors, metadata = _header(checkpoint)
    version = model_version(metadata)
    if version is not None and not version.startswith("2.3"):
        raise WeightsError(f"{checkpoint}: model_version {version!r} is not LTX-2.3")
    mapped, _ = map_names(list(tensors))
    sources = [(name, mapped[name], tensors, checkpoint) for name in SINGLE_FILE_COMPONENTS]
    up_tensors, up_metadata = _header(upsampler)
    sources.append(("latent_upsampler", {key: key for key in up_tensors}, up_tensors, upsampler))
    if configs is None:  # build what the reference builds from these very files
        configs = derived_configs(metadata, up_metadata)
        log_config_differences(configs, checkpoint)
    # Every component is checked before any is filled: a misfit in the last one must not cost a 46 GB read.
    # Parameters on meta (filled below); buffers real, as computed at init (the non-persistent
    # ones, RoPE tables and filters, are never in a checkpoint).
    empty = {name: _meta(name, configs, include_buffers=False) for name, *_ in sources}
    for name, names, infos, source in sources:
        want, tied = expected_shapes(empty[name])
        problems = _misfits(names, infos, want, tied)
        if problems:
            raise WeightsError(f"{source}: {name} does not fit LTX-2.3: {problems}")
    modules: dict[str, torch.nn.Module] = {}
    for name, names, infos, source in sources:
        module = _fill(empty.pop(name), names, infos, source, dtype, torch.device(device_for(name)), window_bytes)
        # Placed at once, so that a cast or a move to the GPU frees host memory before the next one.
        modules[name] = place(name, module) if place is not None else module
    return modules


def _header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a truncated or unreadable one raises WeightsError."""
    try:
        tensors, metadata, needed = read_header(path)
    except (HeaderError, OSError) as exc:
        raise WeightsError(str(exc)) from exc
    size = Path(path).stat().st_size
    if size < needed:
        raise WeightsError(f"{path}: truncated ({size:,} of {needed:,} bytes)")
    return tensors, metadata


def _fill(
    module: torch.nn.Module,
    names: dict[str, str],
    infos: dict[str, Any],
    source: Path,
    dtype: torch.dtype,
    device: torch.device,
    window_bytes: int,
) -> torch.nn.Module:
    """`module` (checked, on meta) with each tensor `names[its name]` of `source` streamed onto `device`."""
    aliases = _aliases(module)  # before filling: filling replaces the shared tensor under one name only
    # Read in file order (sequential I/O); a view the caller keeps (CPU parameters already in
    # `dtype`) holds its mapping, so only tensors that leave the host get a bounded window.
    order = sorted(names, key=lambda key: infos[names[key]].end)
    window = window_bytes if device.type != "cpu" else None
    staging: torch.Tensor | None = None
    for key, tensor in _stream(source, [(k, names[k]) for k in order], window):
        if window is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            # Convert through one reused host buffer: a fresh copy per tensor, freed after the
            # move, is kept by glibc's heap (measured: 86 of 169 MB converted stayed resident).
            if staging is None or staging.numel() < tensor.numel():
                staging = torch.empty(tensor.numel(), dtype=dtype)
            tensor = staging[: tensor.numel()].view(tensor.shape).copy_(tensor)
        # A synchronous copy (non_blocking=False): the buffer and the mapped pages are free to go after it.
        set_module_tensor_to_device(module, key, device, value=tensor, dtype=dtype, clear_cache=False)
    if aliases:
        loaded = module.state_dict(keep_vars=True)
        for alias, first in aliases.items():
            if alias not in names:  # a tied tensor saved once: its alias shares the loaded one
                shared = loaded[first]
                set_module_tensor_to_device(module, alias, device, value=shared, dtype=shared.dtype, clear_cache=False)
    if device.type != "meta":
        tensors = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
        leftover = [k for k, t in tensors if t.is_meta]
        if leftover:
            raise WeightsError(f"{source}: {type(module).__name__} left unfilled: {', '.join(leftover[:5])}")
    # The buffers computed at init (small) follow the parameters; those already there do not move.
    return module.to(device).eval().requires_grad_(False)


def _misfits(names: dict[str, str], infos: dict[str, Any], want: dict[str, tuple[int, ...]], tied: set[str]) -> str:
    """What keeps the file's tensors from filling the module ("" when they fit), named as in the file."""

    def some(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f", … (+{len(items) - 5})" if len(items) > 5 else "")

    missing = sorted(k for k in want if k not in names and k not in tied)
    unexpected = sorted(names[k] for k in names if k not in want)
    wrong = sorted(
        f"{names[k]} {list(infos[names[k]].shape)} != {list(want[k])}"
        for k in names if k in want and tuple(infos[names[k]].shape) != want[k]
    )
    parts = [f"{label} {some(items)}" for label, items in
             (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    return "; ".join(parts)


def _aliases(module: torch.nn.Module) -> dict[str, str]:
    """{alias: first name} for tensors registered under several names (tied weights)."""
    first: dict[int, str] = {}
    aliases = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        if first.setdefault(id(tensor), key) != key:
            aliases[key] = first[id(tensor)]
    return aliases


def _stream(path: Path, pairs: list[tuple[str, str]], window: int | None) -> Iterator[tuple[str, torch.Tensor]]:
    """(label, tensor) for each (label, name in the file) of `pairs`, the tensor a view of the mapped file.

    With a `window`, the file is mapped afresh after every `window` bytes: closing a
    `safe_open` handle unmaps the file once no view of it is left, so pages already copied
    leave the process instead of piling up in its RSS until the whole file is mapped in.
    """
    with ExitStack() as stack:
        handle, mapped = None, 0
        for label, key in pairs:
            if handle is None or (window is not None and mapped >= window):
                stack.close()
                handle, mapped = stack.enter_context(safe_open(str(path), framework="pt", device="cpu")), 0
            tensor = handle.get_tensor(key)
            mapped += tensor.nbytes
            yield label, tensor
            del tensor  # the caller has copied it (or kept it); do not hold the mapping for it


# ---- a weights directory in the official layout ------------------------------------------------

CHECKPOINT_GLOB = "ltx-2.3-22b-distilled*.safetensors"
UPSAMPLER_GLOB = "ltx-2.3-spatial-upscaler-x2*.safetensors"
SINGLE_FILE_INDEX = {"label": "LTX-2.3 distilled (official single-file checkpoint)", "max_sequence_length": 1024}


def find_single_file(weights_dir: Path) -> tuple[Path, Path] | None:
    """(checkpoint, upsampler) when `weights_dir` holds the official files, else None."""
    weights_dir = Path(weights_dir)
    # The distilled LoRA (…-distilled-lora-384-1.1) matches the glob too, and is not a checkpoint.
    checkpoints = [p for p in weights_dir.glob(CHECKPOINT_GLOB) if "lora" not in p.name]
    upsamplers = list(weights_dir.glob(UPSAMPLER_GLOB))
    if not checkpoints or not upsamplers:
        return None
    newest = lambda path: (release_of_name(path.name) or "", path.name)  # noqa: E731
    return max(checkpoints, key=newest), max(upsamplers, key=newest)
