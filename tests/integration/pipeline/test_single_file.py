"""Official single-file checkpoints: name mapping, header check and loading.

`tests/fixtures/ltx23_checkpoint_keys.json.gz` lists every tensor (name, shape) of the official
LTX-2.3 files as Lightricks' ltx-core 1.0.0 modules define them under the 2.3 configuration
(regenerate with tests/fixtures/make_ltx23_checkpoint_keys.py where ltx-core is installed).
"""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from official_files import to_official, write_official
from pipeline.errors import WeightsError
from pipeline.weights.inspect import expected_shapes
from pipeline.weights.loader import load_components
from pipeline.weights.registry import meta_module
from pipeline.weights.single_file import (
    SINGLE_FILE_COMPONENTS,
    check_single_file,
    load_single_file,
    map_names,
    to_diffusers,
)
from pipeline.weights.tiny import TINY_CONFIGS, ensure_tiny_model
from repo_paths import FIXTURES

FIXTURE = FIXTURES / "ltx23_checkpoint_keys.json.gz"


@pytest.fixture(scope="module")
def official() -> dict:
    with gzip.open(FIXTURE, "rt") as f:
        return json.load(f)


def test_mapping_covers_every_real_tensor_exactly(official):
    combined = official["combined"]
    mapped, dropped = map_names(list(combined))
    assert dropped == []
    for name in SINGLE_FILE_COMPONENTS:
        want, _ = expected_shapes(meta_module(name))
        got = {dk: tuple(combined[ck]) for dk, ck in mapped[name].items()}
        assert set(got) == set(want), name
        assert all(got[k] == want[k] for k in want), name
    want, _ = expected_shapes(meta_module("latent_upsampler"))
    assert {k: tuple(v) for k, v in official["upsampler"].items()} == want


def test_known_prefixes_and_dropped_statistics():
    assert to_diffusers("model.diffusion_model.adaln_single.linear.weight") == (
        "transformer", "time_embed.linear.weight",
    )
    assert to_diffusers("model.diffusion_model.audio_prompt_adaln_single.linear.bias") == (
        "transformer", "audio_prompt_adaln.linear.bias",
    )
    assert to_diffusers("text_embedding_projection.video_aggregate_embed.weight") == (
        "connectors", "video_text_proj_in.weight",
    )
    assert to_diffusers("vae.per_channel_statistics.mean-of-means") == ("vae", "latents_mean")
    assert to_diffusers("vae.per_channel_statistics.mean-of-stds") is None
    assert to_diffusers("vocoder.bwe_generator.ups.0.weight") == ("vocoder", "bwe_generator.upsamplers.0.weight")


def _write_header_only(path: Path, shapes: dict[str, list[int]], metadata: dict[str, str]) -> None:
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


REFERENCE = json.loads((FIXTURES / "ltx23_reference_config.json").read_text())


def official_metadata() -> dict[str, str]:
    """The metadata of an official checkpoint: its architecture in ltx-core's schema, as JSON."""
    return {"config": json.dumps({**REFERENCE["checkpoint"], "model_version": "2.3.0"})}


def test_weights_check_of_the_official_layout_without_data(official, tmp_path):
    ckpt = tmp_path / "ltx-2.3-22b-distilled-1.1.safetensors"
    up = tmp_path / "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"
    _write_header_only(ckpt, official["combined"], official_metadata())
    _write_header_only(up, official["upsampler"], {"config": json.dumps(REFERENCE["upsampler"])})
    report = check_single_file(ckpt, up)
    assert [c.name for c in report.components] == [*SINGLE_FILE_COMPONENTS, "latent_upsampler"]
    for c in report.components:
        assert (c.missing, c.unexpected, c.wrong_shape, c.unreadable) == ([], [], [], []), c.lines()
        assert c.truncated  # header only
    # The checked architecture is the metadata's, read with ltx-core's defaults; where it differs
    # from diffusers' conversion configs, the check says so without failing.
    notes = {c.name: c.notes for c in report.components}
    assert any("cross_attn_timestep_scale_multiplier: 1000 -> 1" in n for n in notes["transformer"])
    assert any("decoder_spatial_padding_mode: 'zeros' -> 'reflect'" in n for n in notes["vae"])
    assert "note (" in report.text()
    # Metadata that does not describe LTX-2.3 is named.
    _write_header_only(ckpt, official["combined"], {"config": json.dumps({"model_version": "2.3.0"})})
    assert "text projection sits in the transformer" in check_single_file(ckpt, up).text()
    # A 2.0 checkpoint, a renamed tensor and a wrong shape are all named.
    combined = dict(official["combined"])
    combined["model.diffusion_model.not_a_layer.weight"] = combined.pop("model.diffusion_model.patchify_proj.weight")
    combined["vae.decoder.conv_in.conv.weight"] = [1, 2, 3]
    _write_header_only(ckpt, combined, {**official_metadata(), "model_version": "2.0.0"})
    report = check_single_file(ckpt)
    by = {c.name: c for c in report.components}
    assert by["transformer"].missing == ["proj_in.weight"]
    assert by["transformer"].unexpected == ["model.diffusion_model.not_a_layer.weight"]
    assert [n for n, _, _ in by["vae"].wrong_shape] == ["decoder.conv_in.conv.weight"]
    assert "is not LTX-2.3" in report.text()


# ---- loading, shown on the tiny model written in the official layout (tests/official_files.py) --


def test_inverse_round_trips_over_the_official_names(official):
    for key in official["combined"]:
        component, name = to_diffusers(key)
        assert to_official(component, name) == key


def test_load_single_file_reassembles_the_tiny_model(tmp_path):
    tiny = load_components(ensure_tiny_model(tmp_path / "cache"))
    combined = {}
    for name in SINGLE_FILE_COMPONENTS:
        for key, tensor in getattr(tiny, name).state_dict().items():
            combined[to_official(name, key)] = tensor.contiguous()
    ckpt, up = tmp_path / "tiny-official.safetensors", tmp_path / "tiny-upscaler.safetensors"
    save_file(combined, ckpt, metadata={"config": json.dumps({"model_version": "2.3.0"})})
    save_file({k: v.contiguous() for k, v in tiny.latent_upsampler.state_dict().items()}, up)

    modules = load_single_file(ckpt, up, dtype=torch.float32, configs=TINY_CONFIGS)
    assert set(modules) == {*SINGLE_FILE_COMPONENTS, "latent_upsampler"}
    for name, module in modules.items():
        reference = getattr(tiny, name).state_dict()
        loaded = module.state_dict()
        assert set(loaded) == set(reference), name
        for key in reference:
            torch.testing.assert_close(loaded[key], reference[key], msg=f"{name}.{key}")
    # A checkpoint of another model version is refused by name.
    save_file(combined, ckpt, metadata={"model_version": "2.0"})
    with pytest.raises(WeightsError, match="not LTX-2.3"):
        load_single_file(ckpt, up, dtype=torch.float32, configs=TINY_CONFIGS)
    # A missing tensor is refused, naming the component.
    combined.pop(next(k for k in combined if k.startswith("vocoder.")))
    save_file(combined, ckpt, metadata={"model_version": "2.3.0"})
    with pytest.raises(WeightsError, match="vocoder does not fit"):
        load_single_file(ckpt, up, dtype=torch.float32, configs=TINY_CONFIGS)


def test_a_directory_in_the_official_layout_loads_as_components(tmp_path):
    import shutil

    from pipeline.weights.loader import load_single_file_components
    from pipeline.weights.single_file import find_single_file

    tiny_dir = ensure_tiny_model(tmp_path / "cache")
    tiny = load_components(tiny_dir)
    work = tmp_path / "official"
    work.mkdir()
    combined = {
        to_official(name, key): tensor.contiguous()
        for name in SINGLE_FILE_COMPONENTS
        for key, tensor in getattr(tiny, name).state_dict().items()
    }
    save_file(combined, work / "ltx-2.3-22b-distilled-1.1.safetensors")
    save_file({k: v.contiguous() for k, v in tiny.latent_upsampler.state_dict().items()},
              work / "ltx-2.3-spatial-upscaler-x2-1.1.safetensors")
    assert find_single_file(work) is not None
    with pytest.raises(WeightsError, match="text_encoder, tokenizer"):
        load_single_file_components(work)
    for folder in ("text_encoder", "tokenizer"):
        shutil.copytree(tiny_dir / folder, work / folder)
    import pipeline.weights.loader as loader

    original = loader.load_single_file
    loader.load_single_file = lambda *a, **k: original(*a, **{**k, "configs": TINY_CONFIGS})  # tiny widths
    try:
        components = load_single_file_components(work, dtype=torch.float32)
    finally:
        loader.load_single_file = original
    torch.testing.assert_close(components.vae.state_dict()["latents_mean"], tiny.vae.state_dict()["latents_mean"])
    assert components.tokenizer.padding_side == "left" and not components.is_smoke_test


def test_cli_check_recognises_the_official_layout(official, tmp_path, capsys):
    from server.entrypoints.cli import main

    _write_header_only(tmp_path / "ltx-2.3-22b-distilled-1.1.safetensors", official["combined"], official_metadata())
    _write_header_only(tmp_path / "ltx-2.3-spatial-upscaler-x2-1.1.safetensors", official["upsampler"],
                       {"config": json.dumps(REFERENCE["upsampler"])})
    assert main(["weights", "check", str(tmp_path)]) == 1  # header-only files: data missing
    out = capsys.readouterr().out
    assert "latent_upsampler" in out and "truncated file" in out and "missing (" not in out
    assert main(["weights", "check", str(tmp_path / "ltx-2.3-22b-distilled-1.1.safetensors")]) == 1


def test_a_misfit_is_refused_before_loading_naming_the_tensor_and_the_file(tmp_path):
    checkpoint, upsampler = write_official(tmp_path, TINY_CONFIGS)
    with safe_open(str(checkpoint), framework="pt", device="cpu") as handle:
        combined = {key: handle.get_tensor(key).clone() for key in handle.keys()}  # noqa: SIM118
    bad = dict(combined)
    bad["model.diffusion_model.not_a_layer.weight"] = bad.pop("model.diffusion_model.patchify_proj.weight")
    save_file(bad, checkpoint)
    with pytest.raises(WeightsError) as refused:
        load_single_file(checkpoint, upsampler, dtype=torch.float32, configs=TINY_CONFIGS)
    message = str(refused.value)
    assert message.startswith(f"{checkpoint}: transformer does not fit LTX-2.3: missing proj_in.weight; "
                              "unexpected model.diffusion_model.not_a_layer.weight")
    conv = next(key for key in combined if key.startswith("vocoder.") and combined[key].ndim == 3)
    placed: list[str] = []
    save_file({**combined, conv: torch.zeros(1, 2, 3)}, checkpoint)
    with pytest.raises(WeightsError, match=rf"vocoder does not fit LTX-2.3: wrong shape {re.escape(conv)} "
                                           r"\[1, 2, 3\] != \["):
        load_single_file(checkpoint, upsampler, dtype=torch.float32, configs=TINY_CONFIGS,
                         place=lambda name, module: placed.append(name) or module)
    assert placed == []  # every component is checked before the first one is read
    # A truncated file is named before anything is read.
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="truncated"):
        load_single_file(checkpoint, upsampler, dtype=torch.float32, configs=TINY_CONFIGS)


def test_the_checkpoint_is_found_by_release_not_by_name_order(tmp_path):
    from pipeline.weights.single_file import find_single_file

    for name in ("ltx-2.3-22b-distilled-1.1.safetensors", "ltx-2.3-22b-distilled-lora-384-1.1.safetensors",
                 "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"):
        (tmp_path / name).write_bytes(b"")
    checkpoint, upsampler = find_single_file(tmp_path)
    assert checkpoint.name == "ltx-2.3-22b-distilled-1.1.safetensors"  # not the LoRA, which sorts last
    assert upsampler.name == "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"
