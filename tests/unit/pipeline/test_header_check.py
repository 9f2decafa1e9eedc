"""`weights check`: headers only, against meta-device instances of the configs."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.weights.inspect import check_directory, expected_shapes, read_header
from pipeline.weights.registry import meta_module
from pipeline.weights.tiny import build_tiny_model
from repo_paths import REPO


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("check") / "tiny")


def _write_header_only(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> None:
    """A safetensors header describing `shapes`, without the data (the file is 'truncated')."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


def test_tiny_model_checks_clean_against_its_own_configs(tiny_dir):
    report = check_directory(tiny_dir)  # smoke_test in model_index -> its own config.json files
    assert report.ok, report.text()
    assert all(c.expected_count > 0 for c in report.components)


def test_tiny_model_against_the_real_configs_is_all_wrong_shapes(tiny_dir):
    report = check_directory(tiny_dir, against="real")
    assert not report.ok
    vae = next(c for c in report.components if c.name == "vae")
    assert vae.wrong_shape or vae.missing
    assert vae.config_differences["latent_channels"] == (8, 128)  # config.json vs the real config


def test_missing_unexpected_wrong_shape_and_truncated_are_named(tiny_dir, tmp_path):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tiny_dir, work)
    path = next((work / "latent_upsampler").glob("*.safetensors"))
    tensors = load_file(path)
    names = sorted(tensors)
    dropped, renamed, reshaped = names[0], names[1], names[2]
    tensors.pop(dropped)
    tensors["not_a_real_layer.weight"] = tensors.pop(renamed)
    tensors[reshaped] = torch.zeros(3, 3)
    save_file(tensors, path)
    voc = next((work / "vocoder").glob("*.safetensors"))
    voc.write_bytes(voc.read_bytes()[:-100])

    report = check_directory(work)
    by = {c.name: c for c in report.components}
    up = by["latent_upsampler"]
    assert set(up.missing) == {dropped, renamed}
    assert up.unexpected == ["not_a_real_layer.weight"]
    assert [name for name, _, _ in up.wrong_shape] == [reshaped]
    assert by["vocoder"].truncated and not by["vocoder"].missing
    text = report.text()
    for name in (dropped, "not_a_real_layer.weight", reshaped, "truncated"):
        assert name in text
    (work / "audio_vae").rename(work / "audio_vae_gone")
    assert "audio_vae: MISSING" in check_directory(work).text()


def test_real_architecture_headers_match_without_any_weights(tmp_path):
    """Header-only files with the real names and shapes: the real check passes on names/shapes.

    Gemma is written with the hub's transformers-4 names (language_model.model.*) and without
    the tied lm_head, as google's checkpoints are.
    """
    for name in ("transformer", "connectors", "vae", "audio_vae", "vocoder", "latent_upsampler"):
        shapes, _ = expected_shapes(meta_module(name))
        _write_header_only(tmp_path / name / "diffusion_pytorch_model.safetensors", shapes)
    shapes, tied = expected_shapes(meta_module("text_encoder"))
    legacy = {}
    for key, shape in shapes.items():
        if key in tied:
            continue
        old = key.replace("model.language_model.", "language_model.model.")
        old = old.replace("model.vision_tower.", "vision_tower.")
        old = old.replace("model.multi_modal_projector.", "multi_modal_projector.")
        legacy[old] = shape
    _write_header_only(tmp_path / "text_encoder" / "model-00001-of-00001.safetensors", legacy)

    report = check_directory(tmp_path, against="real")
    for c in report.components:
        assert (c.missing, c.unexpected, c.wrong_shape) == ([], [], []), c.lines()
        assert c.truncated  # header only: the data section is absent, and that is reported
    transformer = report.components[0]
    assert transformer.expected_count > 4000 and transformer.dtypes == {"BF16": transformer.expected_count}


def test_read_header_reads_no_data(tiny_dir):
    path = next((tiny_dir / "transformer").glob("*.safetensors"))
    tensors, _, needed = read_header(path)
    assert needed == path.stat().st_size
    assert set(tensors) == set(load_file(path))


def test_cli_check_exit_codes(tiny_dir, tmp_path, capsys):
    from server.entrypoints.cli import main

    assert main(["weights", "check", str(tiny_dir)]) == 0
    assert "all components match" in capsys.readouterr().out
    assert main(["weights", "check", str(tiny_dir), "--against", "real"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert main(["weights", "check", str(tmp_path / "nothing-here")]) == 2


def test_cli_plan(capsys):
    from server.entrypoints.cli import main

    assert main(["weights", "plan", "--vram-gb", "48"]) == 0
    assert capsys.readouterr().out.startswith("memory plan fp8")
    assert main(["weights", "plan", "--vram-gb", "48", "--plan", "bogus"]) == 2
    assert "unknown plan 'bogus'" in capsys.readouterr().err
    # A stated host: a 24 GB card needs the offload plan, whose pinned weights a 64 GB host cannot hold.
    assert main(["weights", "plan", "--vram-gb", "24", "--ram-gb", "128"]) == 0
    assert capsys.readouterr().out.startswith("memory plan offload")
    assert main(["weights", "plan", "--vram-gb", "24", "--ram-gb", "64"]) == 2
    assert "of host RAM" in capsys.readouterr().err
    assert main(["weights", "plan", "--ram-gb", "64"]) == 2
    assert "--ram-gb goes with --vram-gb" in capsys.readouterr().err


def test_cli_stops_quietly_when_its_reader_goes_away():
    """`ltx-server weights plan ... | head -1`: the closed pipe ends the command with 141 (as SIGPIPE would), not
    a traceback."""
    command = [sys.executable, "-m", "server.entrypoints.cli", "weights", "plan", "--vram-gb", "24", "--ram-gb", "128"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # long before the interpreter has started and printed the plan
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr, stderr
