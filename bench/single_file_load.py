"""Host memory of loading an official single-file checkpoint: streamed tensor by tensor vs whole components.

Writes a checkpoint in the official layout that is large next to its largest tensor (the tiny
model's components with a widened, deepened transformer: about 250 MB against 9 MB), then
loads it in a fresh process and reports the peak RSS growth during each load (VmHWM, reset
just before it; mapped file pages included). Rows:

* streamed: `pipeline.weights.single_file.load_single_file`, tensors sent one by one to their device;
* whole component: the previous loader, reimplemented here: each component read into a state
  dict, assigned with `load_state_dict(assign=True)`, and only then moved (`place`).

On a GPU the target is CUDA and the file is bf16, as the real one. Without a GPU the meta
device stands in for it and the file is float32 loaded as bf16, so that every byte is read and
converted on the host (a bf16 copy onto meta would read nothing).

    .venv/bin/python bench/single_file_load.py [--markdown] [--window-mib 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from table import print_table  # noqa: E402


def whole_component_load(checkpoint: str, upsampler: str, dtype, configs, target: str) -> dict:
    """The loader before streaming: every component in host RAM, then placed (kept for comparison)."""
    from safetensors import safe_open

    from pipeline.weights.registry import meta_module
    from pipeline.weights.single_file import SINGLE_FILE_COMPONENTS, map_names

    modules = {}
    with safe_open(checkpoint, framework="pt", device="cpu") as handle:
        mapped, _ = map_names(list(handle.keys()))
        for name in SINGLE_FILE_COMPONENTS:
            state = {dk: handle.get_tensor(ck).to(dtype) for dk, ck in mapped[name].items()}
            modules[name] = meta_module(name, configs, include_buffers=False)
            modules[name].load_state_dict(state, strict=True, assign=True)
    with safe_open(upsampler, framework="pt", device="cpu") as handle:
        state = {key: handle.get_tensor(key).to(dtype) for key in handle.keys()}  # noqa: SIM118
    modules["latent_upsampler"] = meta_module("latent_upsampler", configs, include_buffers=False)
    modules["latent_upsampler"].load_state_dict(state, strict=True, assign=True)
    return {name: module.to(target) for name, module in modules.items()}


def child(checkpoint: str, upsampler: str, target: str, window: int) -> dict:
    """Both loads, streamed first, each measured from a reset peak (one process: imports once)."""
    import torch

    from official_files import SCALED_CONFIGS, memory_status, reset_peak
    from pipeline.weights.registry import meta_module
    from pipeline.weights.single_file import load_single_file

    for name in SCALED_CONFIGS:  # lazy imports and first-call allocations before the measurement
        meta_module(name, SCALED_CONFIGS, include_buffers=False)
    loads = {
        # First, so that no earlier load's freed heap can hide its growth.
        "streamed": lambda: load_single_file(checkpoint, upsampler, dtype=torch.bfloat16, configs=SCALED_CONFIGS,
                                             device_for=lambda name: target, window_bytes=window),
        "whole": lambda: whole_component_load(checkpoint, upsampler, torch.bfloat16, SCALED_CONFIGS, target),
    }
    results = {}
    for how, load in loads.items():
        reset_peak()
        before = memory_status()
        clock = time.perf_counter()
        modules = load()
        if target == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - clock
        after = memory_status()
        assert all(p.device.type == target for m in modules.values() for p in m.parameters())
        results[how] = {"peak_growth_mib": after["VmHWM"] - before["VmRSS"], "seconds": seconds}
        del modules
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--window-mib", type=int, default=16, help="mapped window of the streamed load (MiB)")
    parser.add_argument("--child", nargs=4, metavar=("CHECKPOINT", "UPSAMPLER", "TARGET", "WINDOW"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        checkpoint, upsampler, target, window = args.child
        print(json.dumps(child(checkpoint, upsampler, target, int(window))))
        return

    import torch

    from official_files import SCALED_CONFIGS, write_official
    from pipeline.weights.inspect import read_header
    from pipeline.weights.single_file import map_names

    target = "cuda" if torch.cuda.is_available() else "meta"
    file_dtype = torch.bfloat16 if target == "cuda" else torch.float32
    with tempfile.TemporaryDirectory(prefix="ltx-bench-") as tmp:
        checkpoint, upsampler = write_official(Path(tmp), SCALED_CONFIGS, file_dtype)
        tensors, _, _ = read_header(checkpoint)
        mapped, _ = map_names(list(tensors))
        nbytes = {key: file_dtype.itemsize * torch.Size(info.shape).numel() for key, info in tensors.items()}
        file_mib = checkpoint.stat().st_size / 2**20
        largest_mib = max(nbytes.values()) / 2**20
        component_mib = max(sum(nbytes[k] for k in names.values()) for names in mapped.values()) / 2**20
        # A fresh process measures: this one has just allocated and freed the whole file.
        done = subprocess.run([sys.executable, __file__, "--child", str(checkpoint), str(upsampler), target,
                               str(args.window_mib * 2**20)], check=True, capture_output=True, text=True)
        results = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for how, label in (("streamed", f"streamed (load_single_file, {args.window_mib} MiB window)"),
                       ("whole", "whole component, then placed (previous loader)")):
        peak = results[how]["peak_growth_mib"]
        rows.append([label, f"{file_mib:.0f}", f"{largest_mib:.1f}", f"{component_mib:.0f}", f"{peak:.0f}",
                     f"{peak / file_mib:.2f}", f"{results[how]['seconds']:.2f}"])
    header = ["load", "file MiB", "largest tensor MiB", "largest component MiB", "peak RSS growth MiB",
              "peak / file", "seconds"]
    print_table(header, rows, args.markdown)
    print()
    print(f"target {target}, file {str(file_dtype).removeprefix('torch.')} loaded as bfloat16")


if __name__ == "__main__":
    main()
