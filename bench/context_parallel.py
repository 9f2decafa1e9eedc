"""Context parallelism projection: one 1536x1024 job split over 2/4/8 H100s or H200s (issue 12).

A projection, not a measurement (no GPU here). Per transformer pass and per GPU:

* compute: the FLOPs torch's FlopCounterMode counts on the real transformer (meta device, the
  polynomial fit of `bench/gpu_floor.py` in video tokens T and audio tokens A). Under our plan
  (`pipeline/placement/parallel.py`) the T, T^2 and T*A terms divide by N (video tokens split;
  attention over H/N heads per GPU) while the A, A^2 and constant terms (the audio stream,
  whole on every GPU) do not. Time = FLOPs / (989 TFLOP/s dense bf16 x MFU).
* communication: the bytes each GPU sends in Ulysses' all-to-alls per layer (video
  self-attention: q, k, v and the output, (T/N) x 4096 bf16 each; video->audio attention: the
  video k, v at (T/N) x 2048 and the audio q and output at A x 2048), (N-1)/N of each leaving the
  GPU, at an effective NVLink all-to-all bandwidth, plus a fixed latency per collective, plus the
  output all-gather (T x 128 fp32) per pass. No overlap of communication with compute is
  assumed (diffusers' Ulysses is synchronous): a conservative figure.

Efficiency = time on 1 GPU / (N x time on N GPUs), for the 11 transformer passes (8 at stage 1,
3 at stage 2). The text encoder, the upsampler and the VAE decode run on rank 0 alone and are
not in these figures (they add the same serial time to every N).

    python bench/context_parallel.py [--markdown] [--mfu 0.5] [--all-to-all-gbps 360]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gpu_floor import features, fit, geometry_of  # bench/ is on sys.path when a script runs
from table import print_table

from pipeline.generation.schedule import STAGE1_SIGMAS, STAGE2_SIGMAS
from pipeline.geometry import Geometry
from pipeline.placement import plan as planner
from pipeline.weights.registry import meta_module

BF16_DENSE = 989e12  # H100 SXM and H200 SXM: the same Hopper compute
GPUS = {"H100 80GB": 80 * planner.GiB, "H200 141GB": 141 * planner.GiB}  # NVLink 4 (900 GB/s) on both
LAYERS = 48
VIDEO_WIDTH, CROSS_WIDTH, OUT_CHANNELS = 4096, 2048, 128
COLLECTIVES_PER_LAYER = 8  # 4 all-to-alls per Ulysses attention, 2 such attentions
DIVIDED = (1, 2, 5)  # T, T^2, T*A in gpu_floor.features


def pass_flops(coefficients: np.ndarray, tokens: int, audio: int, ranks: int) -> float:
    """FLOPs one GPU computes in one pass when the video tokens are split `ranks` ways."""
    terms = np.array(features(tokens, audio)) * coefficients
    return float(sum(value / ranks if index in DIVIDED else value for index, value in enumerate(terms)))


def pass_bytes(tokens: int, audio: int, ranks: int) -> float:
    """Bytes one GPU sends in one pass (all-to-alls of every layer plus the output gather)."""
    if ranks == 1:
        return 0.0
    away = (ranks - 1) / ranks
    share = tokens / ranks
    self_attention = 4 * share * VIDEO_WIDTH * 2
    video_to_audio = (2 * share * CROSS_WIDTH + 2 * audio * CROSS_WIDTH) * 2
    gather = tokens * OUT_CHANNELS * 4
    return LAYERS * (self_attention + video_to_audio) * away + gather * away


def job_seconds(coefficients: np.ndarray, geometry: Geometry, ranks: int, mfu: float, bandwidth: float,
                latency: float) -> tuple[float, float]:
    """(compute s, communication s) of the 11 passes on one GPU of `ranks`."""
    audio = geometry.audio_latent_frames
    compute = comm = 0.0
    for stage, steps in ((1, len(STAGE1_SIGMAS) - 1), (2, len(STAGE2_SIGMAS) - 1)):
        tokens = geometry.video_tokens(stage)
        compute += steps * pass_flops(coefficients, tokens, audio, ranks) / (BF16_DENSE * mfu)
        if ranks > 1:
            comm += steps * (pass_bytes(tokens, audio, ranks) / bandwidth + LAYERS * COLLECTIVES_PER_LAYER * latency)
    return compute, comm


def plan_for(vram: int, geometry: Geometry, ranks: int) -> tuple[str, float]:
    """The fastest plan whose estimate for this job fits each GPU, and that estimate (GiB); ("-", 0) if none."""
    candidates = planner.GROUP_PLANS if ranks > 1 else planner.PLANS
    for plan in candidates:
        estimate = planner.estimate(plan, geometry, ranks=ranks)
        if estimate.peak <= planner.usable_vram(vram):
            return plan, estimate.peak / planner.GiB
    return "-", 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--mfu", type=float, default=0.5, help="model FLOP utilisation of the transformer")
    parser.add_argument("--all-to-all-gbps", type=float, default=360.0,
                        help="effective all-to-all bandwidth per GPU (NVLink 4: 450 GB/s each way, ~80%%)")
    parser.add_argument("--latency-us", type=float, default=25.0, help="fixed cost per collective")
    args = parser.parse_args()
    clock = time.perf_counter()
    coefficients = fit(meta_module("transformer"))
    bandwidth, latency = args.all_to_all_gbps * 1e9, args.latency_us * 1e-6
    print(f"FLOPs counted on the meta-device transformer in {time.perf_counter() - clock:.0f} s; MFU {args.mfu}, "
          f"all-to-all {args.all_to_all_gbps:.0f} GB/s per GPU, {args.latency_us:.0f} us per collective, "
          "no compute/communication overlap")
    header = ["GPU", "frames", "N", "plan", "peak GiB/GPU", "GB sent/GPU/job", "compute s", "comm s", "denoise s",
              "speed-up", "efficiency"]
    lines = []
    for gpu, vram in GPUS.items():
        for frames in (121, 481):
            geometry = geometry_of(1536, 1024, frames)
            single = sum(job_seconds(coefficients, geometry, 1, args.mfu, bandwidth, latency))
            for ranks in (1, 2, 4, 8):
                compute, comm = job_seconds(coefficients, geometry, ranks, args.mfu, bandwidth, latency)
                total = compute + comm
                plan, peak = plan_for(vram, geometry, ranks)
                sent = sum(steps * pass_bytes(geometry.video_tokens(stage), geometry.audio_latent_frames, ranks)
                           for stage, steps in ((1, len(STAGE1_SIGMAS) - 1), (2, len(STAGE2_SIGMAS) - 1)))
                lines.append([gpu, str(frames), str(ranks), plan, f"{peak:.0f}" if peak else "-",
                              f"{sent / 1e9:.0f}", f"{compute:.1f}", f"{comm:.2f}", f"{total:.1f}",
                              f"{single / total:.2f}", f"{single / (ranks * total):.2f}"])
    print_table(header, lines, args.markdown)


if __name__ == "__main__":
    main()
