"""Loading an official checkpoint streams it: host memory stays near one tensor, not a component.

The load is measured in a fresh process (its peak RSS is the load's own: VmHWM is reset just
before it, after the imports). There is no GPU here, so the meta device stands in for it: a
tensor copied there leaves nothing on the host, as a copy to a GPU does. The file is float32
and loaded as bfloat16, so every byte of it is read and converted on the host on its way, as
a real load reads every byte to copy it to the GPU (a bf16 -> bf16 load onto meta would read
nothing and prove nothing). The peak counts the file's mapped pages too (RssFile): the loader
maps the file a window at a time, so they are part of its bound, and that is what is asserted.
The same child then loads onto the CPU, which must hold the whole model: that peak shows the
measurement sees memory that is held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from official_files import SCALED_CONFIGS, write_official
from pipeline.weights.inspect import read_header
from pipeline.weights.single_file import SINGLE_FILE_COMPONENTS, _stream, load_single_file, map_names
from pipeline.weights.tiny import TINY_CONFIGS
from repo_paths import TESTS

WINDOW = 16 * 1024 * 1024  # small next to the file, as the default 256 MiB is next to the real 46 GB

CHILD = """
import json, sys
import torch
from official_files import SCALED_CONFIGS, memory_status, reset_peak
from pipeline.weights.registry import meta_module
from pipeline.weights.single_file import load_single_file

checkpoint, upsampler, window = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name in SCALED_CONFIGS:  # lazy imports and first-call allocations happen before the measurement
    meta_module(name, SCALED_CONFIGS, include_buffers=False)
result = {}
for target in ("meta", "cpu"):
    reset_peak()
    before = memory_status()
    modules = load_single_file(checkpoint, upsampler, dtype=torch.bfloat16, configs=SCALED_CONFIGS,
                               device_for=lambda name: target, window_bytes=window)
    after = memory_status()
    params = [p for module in modules.values() for p in module.parameters()]
    result[target] = {
        "peak_growth_mib": after["VmHWM"] - before["VmRSS"],
        "devices": sorted({p.device.type for p in params}),
        "dtypes": sorted({str(p.dtype) for p in params}),
    }
    del modules, params
print(json.dumps(result))
"""


@pytest.mark.slow  # fresh processes and a 250 MB file
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable peak RSS")
def test_streamed_load_peaks_far_below_the_file_size(tmp_path):
    checkpoint, upsampler = write_official(tmp_path, SCALED_CONFIGS, torch.float32)
    tensors, _, _ = read_header(checkpoint)
    mapped, _ = map_names(list(tensors))
    file_mib = checkpoint.stat().st_size / 2**20
    largest_mib = max(4 * torch.Size(t.shape).numel() for t in tensors.values()) / 2**20
    transformer_bf16_mib = sum(2 * torch.Size(tensors[k].shape).numel() for k in mapped["transformer"].values()) / 2**20
    assert file_mib > 200 and largest_mib < file_mib / 25  # large next to its largest tensor

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS / "support")])}
    done = subprocess.run([sys.executable, "-c", CHILD, str(checkpoint), str(upsampler), str(WINDOW)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    streamed, held = result["meta"], result["cpu"]
    figures = (f"file {file_mib:.0f} MiB, largest tensor {largest_mib:.1f} MiB, window {WINDOW / 2**20:.0f} MiB; "
               f"peak growth streamed {streamed['peak_growth_mib']:.0f} MiB, "
               f"onto the CPU {held['peak_growth_mib']:.0f} MiB")
    # Streamed: one tensor (and its bf16 copy) plus the mapped window, not the transformer.
    assert streamed["peak_growth_mib"] < 0.25 * file_mib, figures
    assert streamed["peak_growth_mib"] < largest_mib + WINDOW / 2**20 + 40, figures  # 40 MiB: modules, headers
    assert streamed["devices"] == ["meta"] and streamed["dtypes"] == ["torch.bfloat16"]
    # The control: loading onto the CPU keeps the model, and the same measurement sees it.
    assert held["peak_growth_mib"] >= transformer_bf16_mib, figures
    assert held["devices"] == ["cpu"] and held["dtypes"] == ["torch.bfloat16"]


def test_a_window_remaps_the_file_without_losing_a_tensor(tmp_path):
    checkpoint, _ = write_official(tmp_path, TINY_CONFIGS, torch.float32)
    with safe_open(str(checkpoint), framework="pt", device="cpu") as handle:
        keys = list(handle.keys())
        expected = {key: handle.get_tensor(key).clone() for key in keys}
    got = {label: tensor.clone() for label, tensor in _stream(checkpoint, [(f"x.{k}", k) for k in keys], window=1)}
    assert list(got) == [f"x.{k}" for k in keys]
    for key in keys:
        assert torch.equal(got[f"x.{key}"], expected[key]), key


class _Recorder:
    """A `place` that says where to load (as `pipeline.placement.apply.placer`'s does) and records what arrives."""

    def __init__(self, device: str):
        self.device = device
        self.arrived: dict[str, set[str]] = {}

    def device_for(self, name: str) -> str:
        return self.device

    def __call__(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        self.arrived[name] = {p.device.type for p in module.parameters()}
        return module


def test_place_device_for_sends_every_tensor_straight_to_its_device(tmp_path):
    checkpoint, upsampler = write_official(tmp_path, TINY_CONFIGS, torch.float32)
    place = _Recorder("meta")
    modules = load_single_file(checkpoint, upsampler, dtype=torch.bfloat16, configs=TINY_CONFIGS, place=place)
    # Each component reaches `place` already filled on its device, one at a time in load order.
    assert list(place.arrived) == [*SINGLE_FILE_COMPONENTS, "latent_upsampler"] == list(modules)
    assert all(devices == {"meta"} for devices in place.arrived.values()), place.arrived


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_streamed_load_onto_a_gpu_keeps_every_value(tmp_path):
    checkpoint, upsampler = write_official(tmp_path, TINY_CONFIGS, torch.float32)
    reference = load_single_file(checkpoint, upsampler, dtype=torch.bfloat16, configs=TINY_CONFIGS)
    on_gpu = load_single_file(checkpoint, upsampler, dtype=torch.bfloat16, configs=TINY_CONFIGS,
                              device_for=lambda name: "cuda", window_bytes=4096)
    for name, module in on_gpu.items():
        assert {t.device.type for t in [*module.parameters(), *module.buffers()]} == {"cuda"}, name
        expected = reference[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value.cpu(), expected[key]), f"{name}.{key}"
