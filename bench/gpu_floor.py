"""GPU floor: transformer FLOPs of a job from the real LTX-2.3 configuration, and their time on an H100.

A projection, not a measurement: nobody here has a GPU. The real transformer is built on the meta
device (no weights, no memory) and torch's FlopCounterMode counts the FLOPs of its actual forward
at a few small token counts. FLOPs are an exact polynomial in the video tokens T and audio tokens
A (linear layers ~T, attention ~T^2 and T*A), so a least-squares fit over those samples gives every
job size; the fit is checked against one more direct count at the reference's 768x512x121.
Time = FLOPs / 989 TFLOP/s (H100 SXM dense bf16): the physical floor of the 11 passes, before the
text encoder, the upsampler and VAE decoding, and before any efficiency loss.

    python bench/gpu_floor.py [--markdown]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from table import print_table  # bench/ is on sys.path when a script runs
from torch.utils.flop_counter import FlopCounterMode

from pipeline.generation.schedule import STAGE1_SIGMAS, STAGE2_SIGMAS  # noqa: E402
from pipeline.geometry import Geometry, fps_fraction, generated_frame_count  # noqa: E402
from pipeline.params import RESOLUTION_PRESETS  # noqa: E402
from pipeline.weights.registry import meta_module  # noqa: E402

H100_BF16_DENSE = 989e12
TEXT_TOKENS = 1024
FRAME_COUNTS = (121, 241, 481)
# (latent frames, latent height, latent width, audio tokens): small samples for the fit.
SAMPLES = [(1, 8, 8, 13), (2, 8, 8, 26), (2, 8, 16, 13), (4, 8, 16, 51), (2, 16, 16, 26), (4, 16, 16, 13),
           (3, 16, 16, 51), (6, 8, 16, 26)]


def count_pass(model: torch.nn.Module, frames: int, height: int, width: int, audio: int) -> int:
    """FLOPs of one transformer pass at the given latent grid, counted on the meta device."""
    tokens = frames * height * width
    meta = {"device": "meta", "dtype": torch.float32}
    config = model.config
    inputs = dict(
        hidden_states=torch.empty(1, tokens, config.in_channels, **meta),
        audio_hidden_states=torch.empty(1, audio, config.audio_in_channels, **meta),
        encoder_hidden_states=torch.empty(1, TEXT_TOKENS, config.cross_attention_dim, **meta),
        audio_encoder_hidden_states=torch.empty(1, TEXT_TOKENS, config.audio_cross_attention_dim, **meta),
        timestep=torch.empty(1, tokens, **meta), audio_timestep=torch.empty(1, **meta), sigma=torch.empty(1, **meta),
        encoder_attention_mask=torch.empty(1, TEXT_TOKENS, **meta),
        audio_encoder_attention_mask=torch.empty(1, TEXT_TOKENS, **meta),
        num_frames=frames, height=height, width=width, fps=24.0, audio_num_frames=audio, use_cross_timestep=True,
        return_dict=False,
    )
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    return counter.get_total_flops()


def features(tokens: float, audio: float) -> list[float]:
    return [1.0, tokens, tokens**2, audio, audio**2, tokens * audio]


def fit(model: torch.nn.Module) -> np.ndarray:
    rows, counts = [], []
    for frames, height, width, audio in SAMPLES:
        rows.append(features(frames * height * width, audio))
        counts.append(count_pass(model, frames, height, width, audio))
    coefficients, *_ = np.linalg.lstsq(np.array(rows), np.array(counts, dtype=np.float64), rcond=None)
    return coefficients


def job_flops(coefficients: np.ndarray, geometry: Geometry) -> tuple[float, float, float]:
    """(per-pass FLOPs at stage 1, at stage 2, whole job) for one geometry."""
    audio = geometry.audio_latent_frames
    stage1 = float(np.dot(coefficients, features(geometry.video_tokens(1), audio)))
    stage2 = float(np.dot(coefficients, features(geometry.video_tokens(2), audio)))
    total = (len(STAGE1_SIGMAS) - 1) * stage1 + (len(STAGE2_SIGMAS) - 1) * stage2
    return stage1, stage2, total


def geometry_of(width: int, height: int, frames: int) -> Geometry:
    return Geometry(width, height, frames, generated_frame_count(frames), fps_fraction(24))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    clock = time.perf_counter()
    model = meta_module("transformer")
    coefficients = fit(model)
    check = geometry_of(768, 512, 121)
    direct = count_pass(model, *check.latent_shape(2), check.audio_latent_frames)
    fitted = float(np.dot(coefficients, features(check.video_tokens(2), check.audio_latent_frames)))
    print(f"fit check at 768x512x121 (T={check.video_tokens(2)}): counted {direct:.4e}, fitted {fitted:.4e} "
          f"({abs(fitted / direct - 1):.2e} relative); counting took {time.perf_counter() - clock:.0f} s")
    sizes = {**{name: size for name, size in RESOLUTION_PRESETS.items()}, "reference 1536x1024": (1536, 1024)}
    header = ["size", "frames", "tokens s1/s2", "TFLOP/pass s2", "PFLOP/job", "H100 floor s"]
    lines = []
    for name, (width, height) in sizes.items():
        for frames in FRAME_COUNTS:
            geometry = geometry_of(width, height, frames)
            _, stage2, total = job_flops(coefficients, geometry)
            lines.append([f"{name} {width}x{height}", str(frames),
                          f"{geometry.video_tokens(1)}/{geometry.video_tokens(2)}", f"{stage2 / 1e12:.0f}",
                          f"{total / 1e15:.2f}", f"{total / H100_BF16_DENSE:.1f}"])
    print_table(header, lines, args.markdown)
    print("Reference (ltx-2.3.md): ~1.9e14 FLOP/pass at 768x512x121, ~1.1e15 at 1536x1024x121, "
          "~4.8e15 per distilled 1536x1024x121 job = ~4.9 s at 989 TFLOP/s; published end to end: "
          "LTX-2 two-stage 1536x1024x121 on an H100 53 s, 768x512x121 8 steps 9.5 s.")


if __name__ == "__main__":
    main()
