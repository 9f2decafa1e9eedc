"""Estimated peak GPU memory per memory plan x resolution preset x frame count.

    .venv/bin/python bench/memory_plans.py            # text table
    .venv/bin/python bench/memory_plans.py --markdown # the BENCHMARKS rows
    .venv/bin/python bench/memory_plans.py --vram-gb 80   # mark what fits an 80 GiB card

These are the planner's estimates (pipeline/placement/plan.py), not measurements: there is no
GPU here. On a GPU, compare them with torch.cuda.max_memory_allocated() after a real job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.geometry import job_geometry  # noqa: E402
from pipeline.params import RESOLUTION_PRESETS  # noqa: E402
from pipeline.placement.plan import (  # noqa: E402
    CALIBRATION,
    PLANS,
    GiB,
    choose_plan,
    estimate,
    host_fits,
    usable_vram,
)

FRAMES = (121, 241, 481)
CARDS_GIB = (24, 48, 80, 96, 141)


def rows(vram_gib: float | None) -> list[list[str]]:
    out = []
    for preset, (width, height) in RESOLUTION_PRESETS.items():
        for frames in FRAMES:
            shape = job_geometry(width, height, frames)
            cells = [f"{preset} {width}x{height}", str(frames), f"{shape.video_tokens():,}"]
            for plan in PLANS:
                est = estimate(plan, shape)
                mark = ""
                if vram_gib is not None:
                    mark = "" if est.peak <= usable_vram(int(vram_gib * GiB)) else " ✗"
                cells.append(f"{est.peak / GiB:.1f}{mark}")
            cells.append(estimate(PLANS[0], shape).peak_phase)
            out.append(cells)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--vram-gb", type=float, default=None, help="mark estimates that do not fit this card")
    args = parser.parse_args(argv)
    header = ["resolution", "frames", "video tokens", *[f"{p} GiB" for p in PLANS], "peak phase (resident)"]
    table = rows(args.vram_gb)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|")
        for r in table:
            print("| " + " | ".join(r) + " |")
        print()
        print("| card (GiB) | usable GiB | automatic plan |")
        print("|---:|---:|---|")
        for gib in CARDS_GIB:
            print(f"| {gib} | {usable_vram(gib * GiB) / GiB:.1f} | {choose_plan(gib * GiB)} |")
        print()
        print("| plan | host RAM for weights GiB (pinned, rounded) | peak while placing GiB | smallest host GiB |")
        print("|---|---:|---:|---:|")
        for plan in PLANS:
            est = estimate(plan, job_geometry(1024, 576, 121))
            smallest = next(gib for gib in range(4, 1025, 4) if host_fits(plan, gib * GiB))
            print(f"| {plan} | {est.host_ram / GiB:.1f} | {est.host_peak / GiB:.1f} | {smallest} |")
        print()
        print(f"Activation terms: {CALIBRATION.source}.")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=False)]
        for r in [header, *table]:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)))
        print()
        for gib in CARDS_GIB:
            print(f"{gib:>4} GiB card: {usable_vram(gib * GiB) / GiB:5.1f} GiB usable -> {choose_plan(gib * GiB)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
