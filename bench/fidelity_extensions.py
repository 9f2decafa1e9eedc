#!/usr/bin/env python3
"""Fidelity of the extensions beyond Oxen's API vs Lightricks' reference code (ltx-core / ltx-pipelines 1.0.0).

The same tiny official-layout checkpoint and comparisons as bench/fidelity.py, for what the
reference's DistilledPipeline takes beyond one start image: keyframes (its `images` triples at
frames other than 0: an end frame, a middle keyframe) and LoRA adapters (ltx-core's fused LoRA
on the same tiny LoRA file). One row per compared quantity: max abs, max relative error.

    .venv/bin/python bench/fidelity_extensions.py [--markdown]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from table import print_table  # noqa: E402

import comparisons as C  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sides = C.load_sides(folder)
        start, end, middle = folder / "start.png", folder / "end.png", folder / "middle.png"
        start.write_bytes(C.start_image_png())
        end.write_bytes(C.start_image_png(260, 200, seed=9, flip=True))
        middle.write_bytes(C.start_image_png(200, 240, seed=13))
        rows: list[list[str]] = []

        def add(pairs: dict, note: str = "") -> None:
            for name, (ours, ref) in pairs.items():
                rows.append([name, f"{C.abs_error(ours, ref):.2e}", f"{C.relative_error(ours, ref):.2e}", note])

        last = C.JOB["num_frames"] - 1
        add(C.compare_job(sides, start, 0.9, ((end, last, 1.0),), tag="end frame (s=1.0)"))
        add(C.compare_job(sides, start, 0.9, ((middle, 8, 0.8), (end, last, 0.6)),
                          tag="middle keyframe (8, s=0.8) + end (s=0.6)"))
        ref = C.reference_job(sides, start, 0.9, C.prompt_text(sides), ((end, last, 1.0),))
        early = C.our_job(sides, start, 0.9, ((end, last - 1, 1.0),))
        add({"negative control: end frame one frame early": (early.video, ref.video)}, "must fail")

        from ltx_reference import build_reference_lora

        loras = folder / "loras"
        build_reference_lora(loras / "style.safetensors", rank=4, seed=21)
        build_reference_lora(loras / "motion.safetensors", rank=2, seed=22, every=3)
        for choice in ([("style", 1.0)], [("style", 0.6), ("motion", -1.5)]):
            label = " + ".join(f"{name}@{scale:g}" for name, scale in choice)
            add({f"{name} [{label}]": pair for name, pair in C.compare_lora_pass(sides, loras, choice).items()})
        with_lora = C.lora_sides(sides, loras, [("style", 0.8)])
        pairs = C.compare_job(with_lora, start, 0.9, tag="LoRA job (style@0.8)", loras=(("style", 0.8),))
        sides.ours.adapters.use([])
        add(pairs)
        base = C.compare_transformer_pass(sides, strength=0.7)["video velocity"][0]
        fused = C.compare_lora_pass(sides, loras, [("style", 1.0)])["LoRA pass: video velocity"][1]
        add({"negative control: base model vs LoRA reference": (base, fused)}, "must fail")
    print_table(["quantity", "max abs", "max rel", "note"], rows, args.markdown)


if __name__ == "__main__":
    main()
