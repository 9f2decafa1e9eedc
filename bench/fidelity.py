#!/usr/bin/env python3
"""Fidelity table: this project vs Lightricks' reference code (ltx-core / ltx-pipelines 1.0.0).

Runs the comparisons of tests/parity (the same functions the parity tests assert on) on one
tiny random LTX-2.3 checkpoint in the official single-file layout, in float32 on the CPU, and
prints one row per compared quantity: max abs error, max relative error (max|diff| / max|ref|).

    .venv/bin/python bench/fidelity.py [--markdown]
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
        sides = C.load_sides(Path(tmp))
        image = Path(tmp) / "start.png"
        image.write_bytes(C.start_image_png())
        rows: list[list[str]] = []

        def add(pairs: dict, note: str = "") -> None:
            for name, (ours, ref) in pairs.items():
                rows.append([name, f"{C.abs_error(ours, ref):.2e}", f"{C.relative_error(ours, ref):.2e}", note])

        add(C.compare_connectors(sides))
        add(C.compare_transformer_pass(sides, strength=0.7))
        add(C.compare_vae(sides))
        add(C.compare_tiled_decode(sides))
        add(C.compare_upsampler(sides))
        add(C.compare_audio(sides))
        add(C.compare_start_image(sides, image))
        for strength in (1.0, 0.7, 0.0):
            add(C.compare_job(sides, image, strength))
        add({"negative control: conditioned tokens at the global timestep": C.compare_transformer_pass(
            sides, strength=0.7, scale_timesteps=False)["video velocity"]}, "must fail")
        add({"negative control: vocoder without the 16 kHz clamp": C.compare_vocoder_variant(
            sides, final_act_fn=None)}, "must fail")
        add({"negative control: decoder padded with zeros": C.compare_vae_variant(
            sides, decoder_spatial_padding_mode="zeros")}, "must fail")
    print_table(["quantity", "max abs", "max rel", "note"], rows, args.markdown)


if __name__ == "__main__":
    main()
