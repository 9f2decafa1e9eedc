#!/usr/bin/env python3
"""LoRA adapters: what the unfused hooks cost vs fusing, at the real model's widths and measured on the tiny one.

Two tables. (1) Arithmetic on the real 22B transformer (built on the meta device from the real
config): a LoRA of rank r on every linear layer — its size in bfloat16, the extra multiply-adds of
the hooks per token as a share of the linear layers' own (an upper bound on the slowdown: attention
is not counted), and what an exact fuse/unfuse would have to keep (a copy of every adapted
weight). (2) Measured on the tiny model on this CPU: one transformer pass with no LoRA, with the
hooks, and with the same LoRA fused into the weights; and the cost of switching a set on
(hooks built) vs fusing and restoring it.

    .venv/bin/python bench/lora_overhead.py [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

import torch  # noqa: E402
from table import print_table  # noqa: E402

from lora_files import build_tiny_lora  # noqa: E402
from pipeline.generation.adapters import load_lora  # noqa: E402
from pipeline.generation.runtime import VideoGenerator  # noqa: E402
from pipeline.params import GenerationParams  # noqa: E402
from pipeline.weights.lora import find_lora  # noqa: E402
from pipeline.weights.registry import meta_module  # noqa: E402
from pipeline.weights.tiny import ensure_tiny_model  # noqa: E402

GiB = 2**30


def real_rows() -> list[list[str]]:
    linears = [m for m in meta_module("transformer").modules() if isinstance(m, torch.nn.Linear)]
    base = sum(m.in_features * m.out_features for m in linears)
    rows = []
    for rank in (16, 64, 128):
        extra = sum(rank * (m.in_features + m.out_features) for m in linears)
        rows.append([f"rank {rank}, all {len(linears)} linear layers", f"{extra * 2 / GiB:.2f}",
                     f"{100 * extra / base:.1f} %", f"{base * 2 / GiB:.1f}"])
    return rows


def timed(fn, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_rows(folder: Path) -> list[list[str]]:
    weights = ensure_tiny_model(folder / "cache")
    build_tiny_lora(weights, folder / "loras" / "style.safetensors", rank=4)
    gen = VideoGenerator.from_directory(weights, lora_dir=folder / "loras")
    transformer = gen.components.transformer
    request = GenerationParams(prompt="p", num_frames=49, resolution="512x512", seed=1, generate_audio=False)
    image = Image_bytes()
    hooked_request = GenerationParams(**{**request.model_dump(), "loras": [{"name": "style", "scale": 1.0}]})
    with torch.inference_mode():
        gen.denoise(request, image, 1)  # warm up and fill the prompt cache
        loaded = load_lora(find_lora(folder / "loras", "style"), transformer)
        modules = dict(transformer.named_modules())
        backup = {name: modules[name].weight.detach().clone() for name in loaded.matrices}

        def fuse() -> None:
            for name, (a, b) in loaded.matrices.items():
                modules[name].weight += b @ a

        def restore() -> None:
            for name, weight in backup.items():
                modules[name].weight.copy_(weight)

        def fused_job() -> None:
            fuse()
            try:
                gen.denoise(request, image, 1)
            finally:
                restore()

        modes = {"no LoRA": lambda: gen.denoise(request, image, 1),
                 "hooks (this server)": lambda: gen.denoise(hooked_request, image, 1),
                 "fused into the weights": fused_job}
        times: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(5):  # alternating rounds: the box's load moves all modes alike
            for name, run in modes.items():
                times[name].append(timed(run, rounds=1))
        passes = {name: statistics.median(values) for name, values in times.items()}
        gen.adapters.use([])
        switch_hooks = timed(lambda: (gen.adapters.use([("style", 1.0)]), gen.adapters.use([])))
        switch_fuse = timed(lambda: (fuse(), restore()))
    base = passes["no LoRA"]
    rows = [[f"denoise (11 passes, 512x512x49): {name}", f"{seconds:.3f}", f"{seconds / base:.2f}"]
            for name, seconds in passes.items()]
    rows.append(["switch a set on and off: hooks", f"{switch_hooks:.4f}", ""])
    rows.append(["switch a set on and off: fuse + exact restore from a copy", f"{switch_fuse:.4f}", ""])
    return rows


def Image_bytes() -> bytes:  # noqa: N802 (a tiny helper, named for what it returns)
    from sample_media import png_bytes

    return png_bytes(96, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    print_table(["real transformer", "LoRA GiB (bf16)", "hook MACs / linear MACs", "exact unfuse copy GiB"],
                real_rows(), args.markdown)
    print()
    with tempfile.TemporaryDirectory() as tmp:
        print_table(["tiny model, CPU", "seconds (median of 5 alternating)", "x no LoRA"], tiny_rows(Path(tmp)),
                    args.markdown)


if __name__ == "__main__":
    main()
