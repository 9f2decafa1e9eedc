"""GPU memory plans for the real model: which plan a card gets, and whether a request fits it.

Pure arithmetic (no torch, no GPU), so it is unit-tested on given VRAM sizes and requests and
shared by the door (`pipeline.engine`: `admit`, `gpu_plans`, `plan_summary`), `pipeline.placement.apply`
(applies the chosen plan) and the benchmarks. A job's size is a `pipeline.geometry.Geometry`: the
frame and token arithmetic is geometry's, written once.

Plans, fastest first:

* `resident`        everything on the GPU in bf16 (≥ ~96 GB: H200, GH200, B200).
* `encoder-offload` Gemma 3 lives in host RAM and visits the GPU only to encode a prompt that
                    is not in the prompt cache (80 GB: H100, A100-80G).
* `fp8`             as encoder-offload, and the transformer's weights are stored in fp8
                    (computed in bf16, layer by layer); Gemma is streamed block by block (48 GB).
* `offload`         transformer, connectors and Gemma stay in pinned host RAM and stream to the
                    GPU block by block on a side CUDA stream (24 GB cards; needs ~70 GB host RAM).

The estimate of a job's peak is: weights resident for the whole job + the largest phase
(prompt encoding, a transformer pass, the upsampler, a VAE decode tile group). Activation terms
are counted in multiples of one hidden-state tensor; the multiples come from walking the
block (see the constants) and carry a margin. They are estimates, to be calibrated on a GPU
with `bench/memory_plans.py --measure`; the refusal they drive errs on the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from pipeline.errors import PlanError, RequestTooLarge
from pipeline.geometry import REFERENCE_TILING, Geometry, job_geometry

GiB = 1024**3

# Parameter counts of the real LTX-2.3 components (checked against meta-device instances of
# pipeline.weights.registry in tests/unit/pipeline/test_memory_plan.py).
TRANSFORMER_PARAMS = 18_988_838_144
TRANSFORMER_BLOCK_PARAMS = 18_561_377_280  # the 48 repeated blocks; the rest stays bf16 under fp8
TRANSFORMER_LAYERS = 48
CONNECTORS_PARAMS = 3_172_227_584
VAE_PARAMS = 726_105_969
AUDIO_VAE_PARAMS = 53_248_146
VOCODER_PARAMS = 128_537_448
UPSAMPLER_PARAMS = 497_867_904
TEXT_ENCODER_PARAMS = 12_187_325_040  # Gemma 3 12B with its SigLIP vision tower (unused by LTX)
TEXT_LANGUAGE_PARAMS = 11_766_034_176  # the text tower LTX runs
TEXT_EMBED_PARAMS = 1_006_878_720  # 262,208 x 3,840 token embedding
TEXT_LAYER_PARAMS = 224_148_992  # one of its 48 decoder layers
TEXT_ENCODER_LAYERS = 48
CONNECTOR_LARGEST_LEAF_PARAMS = 3840 * 49 * 4096 + 4096  # the video input projection
BF16, FP8 = 2, 1

VIDEO_WIDTH, AUDIO_WIDTH, TEXT_WIDTH = 4096, 2048, 3840
MAX_SEQUENCE_LENGTH = 1024
TEXT_HIDDEN_STATES = TEXT_ENCODER_LAYERS + 1

# Hidden-state-sized bf16 tensors alive at the peak of a transformer pass: per-token modulation
# held for the whole pass (adaLN 6 + cross-attention modulation 3 + audio-video scale/shift 4),
# RoPE cos/sin in fp32 (4), and inside a block the residual, the norm output and the 4x-wide
# feed-forward intermediate twice (10). 27, rounded up for allocator slack.
TRANSFORMER_ACTIVATION_WIDTHS = 32
# Ulysses all-to-all (context parallelism over N GPUs): q, k, v and the attention output exist
# before and after the exchange, each 1/N of the video tokens at full width.
ULYSSES_WIDTHS = 8
# Plans a job split over N GPUs can use: fp8 and the resident plans combine with the split; block
# offload does not (each GPU would stream all 48 blocks over PCIe for 1/N of the work).
GROUP_PLANS = ("resident", "encoder-offload", "fp8")
# VAE decoder: its last stage runs 256 channels at H/4 x W/4 for every frame of a tile, in
# bf16: 32 bytes per output pixel per tensor; ~4 such tensors alive in a causal-conv resnet.
DECODE_BYTES_PER_PIXEL = 128
# The runtime decodes with the reference's tiling (pipeline.generation.decode, ltx-core's
# TilingConfig.default()), one temporal group at a time: up to 64 + 1 pixel frames (8 latent
# frames plus the one a later group re-reads for its causal first frame), in spatial tiles of at
# most 512 x 512 px (the 64 px overlap is inside the tile; the short side's tile is scaled down).
# Alive per group, at full frame size in bf16, counted in one-channel planes: its weighted sum
# (3) and weights (1), and at most 4 more while its finished frames are divided out (quotient
# and clamped weights, or the quotient and the tail copied for the next group); one tile's
# decoder activations counted on top, though they never meet the division: this errs high.
DECODE_GROUP_FRAMES = REFERENCE_TILING.tile_frames + 1
DECODE_GROUP_PLANES = 8
VAE_TILE = REFERENCE_TILING.tile_pixels  # the reference's spatial tile, overlap included
ENCODE_EXTRA_BYTES = 2 * MAX_SEQUENCE_LENGTH * TEXT_WIDTH * TEXT_HIDDEN_STATES * BF16 + GiB // 4
RUNTIME_MISC_BYTES = GiB // 2  # latents in fp32, RoPE coordinates, masks, cuBLAS workspaces

# Never plan into the last part of the card: the CUDA context and library handles (~1.5 GiB)
# and allocator fragmentation (~8 %) are not in any tensor count.
RESERVE_FIXED = int(1.5 * GiB)
RESERVE_FRACTION = 0.08

PLANS = ("resident", "encoder-offload", "fp8", "offload")
# What a worker is planned for: the biggest preset for 10 seconds. Planning for the longest
# request (481 frames) would push 48 GB cards onto the much slower `offload` plan for the sake
# of a rare request; instead such requests are checked one by one (and refused with a
# suggestion when they do not fit).
DESIGN_REQUEST = (1024, 1024, 241)


@dataclass(frozen=True)
class PlanSpec:
    name: str
    transformer: str  # "bf16" | "fp8" | "stream"
    connectors: str  # "gpu" | "stream"
    text_encoder: str  # "gpu" | "swap" (whole model visits the GPU) | "stream" (block by block)
    description: str


PLAN_SPECS: dict[str, PlanSpec] = {
    "resident": PlanSpec("resident", "bf16", "gpu", "gpu", "all weights resident in bf16"),
    "encoder-offload": PlanSpec(
        "encoder-offload", "bf16", "gpu", "swap", "Gemma in host RAM, on the GPU only while encoding"
    ),
    "fp8": PlanSpec("fp8", "fp8", "gpu", "stream", "transformer stored in fp8 (bf16 compute), Gemma streamed"),
    "offload": PlanSpec(
        "offload", "stream", "stream", "stream", "block-level group offload on a CUDA stream (pinned host RAM)"
    ),
}


@dataclass
class Estimate:
    """Peak GPU bytes of one job under one plan, with its parts."""

    plan: str
    shape: Geometry
    weights: int  # resident for the whole job
    phases: dict[str, int] = field(default_factory=dict)  # extra bytes at each phase's peak
    vae_tiling: bool = False
    host_ram: int = 0  # pinned / pageable host memory the plan keeps weights in

    @property
    def peak(self) -> int:
        return self.weights + RUNTIME_MISC_BYTES + max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.__getitem__)

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GiB:.1f}" for k, v in self.phases.items())
        tiling = "tiled" if self.vae_tiling else "untiled"
        return (
            f"{self.plan}: {self.shape.label()}: peak ≈ {self.peak / GiB:.1f} GiB "
            f"(weights {self.weights / GiB:.1f} + phase peaks GiB: {parts}; VAE {tiling})"
        )


def usable_vram(total_bytes: int) -> int:
    """Bytes the planner may fill on a card of `total_bytes`."""
    return int(total_bytes - RESERVE_FIXED - RESERVE_FRACTION * total_bytes)


def spec(plan: str) -> PlanSpec:
    try:
        return PLAN_SPECS[plan]
    except KeyError:
        raise PlanError(f"unknown plan {plan!r}; choose one of {', '.join(PLANS)}") from None


def needs_vae_tiling(width: int, height: int) -> bool:
    """Whether the decode splits frames into spatial tiles: the reference's tiling does above 512 px."""
    return max(width, height) > VAE_TILE


def _decode_bytes(shape: Geometry, tiled: bool) -> int:
    """One temporal group's decode; `tiled` False: frames decoded whole (no spatial split), for comparison."""
    frames = min(DECODE_GROUP_FRAMES, shape.generated_frames)
    tile_w, tile_h = (min(shape.width, VAE_TILE), min(shape.height, VAE_TILE)) if tiled else (shape.width, shape.height)
    working = tile_w * tile_h * DECODE_BYTES_PER_PIXEL
    buffers = DECODE_GROUP_PLANES * shape.width * shape.height * BF16
    return frames * (working + buffers)


def _transformer_activation_bytes(shape: Geometry, ranks: int = 1) -> int:
    """One pass's activations on one GPU; with `ranks` > 1 the video tokens are split (context parallelism).

    Split: each GPU holds 1/N of the video tokens' activations plus Ulysses' all-to-all buffers
    (q, k, v and the output, before and after the exchange: 8 more widths over the share), and
    the gathered full-length output (C=128 fp32: counted in RUNTIME_MISC_BYTES). The audio
    stream (hundreds of tokens) is whole on every GPU.
    """
    tokens = shape.video_tokens(2)
    if ranks > 1:
        share = -(-tokens // ranks)  # the largest share
        video = share * VIDEO_WIDTH * BF16 * (TRANSFORMER_ACTIVATION_WIDTHS + ULYSSES_WIDTHS)
    else:
        video = tokens * VIDEO_WIDTH * BF16 * TRANSFORMER_ACTIVATION_WIDTHS
    audio = shape.audio_latent_frames * AUDIO_WIDTH * BF16 * TRANSFORMER_ACTIVATION_WIDTHS
    return video + audio


def _upsampler_bytes(shape: Geometry) -> int:
    positions = shape.video_tokens(1)
    return positions * 1024 * BF16 * 4 + 4 * positions * 128 * 4 * 2  # mid activations + 2x output


def estimate(plan: str, shape: Geometry, vae_tiling: bool | None = None, ranks: int = 1) -> Estimate:
    """The estimated peak of one job of `shape` under `plan`, on the GPU that peaks highest.

    `ranks` > 1: the job is split over that many GPUs (context parallelism). Weights are
    replicated (every GPU holds the whole transformer); the denoising activations divide; the
    text encoder, upsampler and decoder run on rank 0, whose peak this is (the other ranks hold
    less). Block offload does not combine with a split (`PlanError`).
    """
    if ranks > 1 and plan not in GROUP_PLANS:
        raise PlanError(f"memory plan {plan!r} cannot be combined with a job split over {ranks} GPUs; "
                        f"choose one of {', '.join(GROUP_PLANS)}")
    s = spec(plan)
    tiled = needs_vae_tiling(shape.width, shape.height) if vae_tiling is None else vae_tiling
    block_bytes = TRANSFORMER_BLOCK_PARAMS // TRANSFORMER_LAYERS * BF16
    rest = TRANSFORMER_PARAMS - TRANSFORMER_BLOCK_PARAMS
    if s.transformer == "bf16":
        transformer = TRANSFORMER_PARAMS * BF16
    elif s.transformer == "fp8":
        # fp8 blocks + bf16 everything else; one block's bf16 copy exists while it computes.
        transformer = TRANSFORMER_BLOCK_PARAMS * FP8 + rest * BF16 + block_bytes
    else:  # stream: the non-block layers stay, two blocks in flight (computing + prefetching)
        transformer = rest * BF16 + 2 * block_bytes
    # leaf-level streaming: the largest leaf computing while the next one arrives
    connectors = CONNECTORS_PARAMS * BF16 if s.connectors == "gpu" else 2 * CONNECTOR_LARGEST_LEAF_PARAMS * BF16
    small = (VAE_PARAMS + AUDIO_VAE_PARAMS + VOCODER_PARAMS + UPSAMPLER_PARAMS) * BF16
    text_full = TEXT_ENCODER_PARAMS * BF16
    # gpu: all of Gemma stays; swap: its text tower visits the GPU while encoding; stream: the
    # token embedding stays (it runs before the tower) and one layer at a time visits.
    text_resident = {"gpu": text_full, "swap": 0, "stream": TEXT_EMBED_PARAMS * BF16}[s.text_encoder]
    encode_weights = {"gpu": 0, "swap": TEXT_LANGUAGE_PARAMS * BF16, "stream": 2 * TEXT_LAYER_PARAMS * BF16}[
        s.text_encoder
    ]
    weights = transformer + connectors + small + text_resident
    host = 0
    if s.text_encoder != "gpu":
        host += text_full
    if s.transformer == "stream":
        host += TRANSFORMER_PARAMS * BF16
    if s.connectors == "stream":
        host += CONNECTORS_PARAMS * BF16
    phases = {
        "encode": encode_weights + ENCODE_EXTRA_BYTES,
        "denoise": _transformer_activation_bytes(shape, ranks),
        "upsample": _upsampler_bytes(shape),
        "decode": _decode_bytes(shape, tiled),
    }
    return Estimate(plan, shape, weights, phases, tiled, host)


def fits(plan: str, shape: Geometry, vram_bytes: int, ranks: int = 1) -> bool:
    return estimate(plan, shape, ranks=ranks).peak <= usable_vram(vram_bytes)


def choose_plan(vram_bytes: int, design: Geometry | None = None, ranks: int = 1) -> str:
    """The fastest plan whose estimate for the design request fits the card.

    If none does, the smallest plan: requests it cannot hold are refused one by one. With
    `ranks` > 1 only the plans that combine with a split job are candidates.
    """
    design = design or job_geometry(*DESIGN_REQUEST)
    if ranks > 1:
        for plan in GROUP_PLANS:
            if fits(plan, design, vram_bytes, ranks):
                return plan
        raise PlanError(f"a GPU with {vram_bytes / GiB:.0f} GiB cannot hold a job split over {ranks} GPUs "
                        f"under any of {', '.join(GROUP_PLANS)} (block offload does not combine with a split)")
    for plan in PLANS:
        if fits(plan, design, vram_bytes):
            return plan
    smallest = job_geometry(512, 512, 9)
    if not fits(PLANS[-1], smallest, vram_bytes):
        raise PlanError(
            f"a GPU with {vram_bytes / GiB:.0f} GiB cannot run LTX-2.3 under any plan "
            f"(even {smallest.label()} needs ≈ {estimate(PLANS[-1], smallest).peak / GiB:.1f} GiB usable)"
        )
    return PLANS[-1]


def resolve_plan(requested: str | None, vram_bytes: int, ranks: int = 1) -> str:
    """`--plan auto|NAME`: the named plan (validated) or the automatic choice."""
    if requested in (None, "", "auto"):
        return choose_plan(vram_bytes, ranks=ranks)
    name = spec(requested).name
    if ranks > 1 and name not in GROUP_PLANS:
        raise PlanError(f"memory plan {name!r} cannot be combined with --gpus-per-job {ranks}: block offload "
                        f"streams every block through each GPU; choose one of {', '.join(GROUP_PLANS)}")
    return name


def max_frames_that_fit(
    plan: str, width: int, height: int, vram_bytes: int, fps: float | Fraction = 24.0, ranks: int = 1
) -> int:
    """The longest 8k+1 frame count that fits at this size (0 if even 9 frames do not)."""
    best = 0
    for frames in range(9, 482, 8):
        if not fits(plan, job_geometry(width, height, frames, fps), vram_bytes, ranks):
            break
        best = frames
    return best


def check_request(plan: str, shape: Geometry, vram_bytes: int, ranks: int = 1) -> Estimate:
    """The job's estimate, or `RequestTooLarge` with a message that says what would fit."""
    est = estimate(plan, shape, ranks=ranks)
    usable = usable_vram(vram_bytes)
    if est.peak <= usable:
        return est
    frames = max_frames_that_fit(plan, shape.width, shape.height, vram_bytes, shape.fps, ranks)
    hint = (
        f"at {shape.width}x{shape.height} up to {frames} frames fit"
        if frames
        else "choose a smaller resolution"
    )
    raise RequestTooLarge(
        f"{shape.label()} needs ≈ {est.peak / GiB:.1f} GiB of GPU memory under plan {plan!r} "
        f"(peak in {est.peak_phase}), but {usable / GiB:.1f} GiB are usable on this GPU; {hint}"
    )


def summary(plan: str, vram_bytes: int, shapes: list[Geometry] | None = None, ranks: int = 1) -> str:
    """What `serve` prints at start: the plan, its weights and the estimate for typical jobs."""
    shapes = shapes or [job_geometry(1024, 576, 121), job_geometry(1024, 1024, 121), job_geometry(*DESIGN_REQUEST)]
    if ranks > 1:
        shapes = [*shapes, job_geometry(1536, 1024, 481)]
    s = spec(plan)
    first = estimate(plan, shapes[0], ranks=ranks)
    lines = [
        f"memory plan {plan} ({s.description}) on a {vram_bytes / GiB:.1f} GiB GPU "
        f"({usable_vram(vram_bytes) / GiB:.1f} GiB usable): weights {first.weights / GiB:.1f} GiB on the GPU, "
        f"{first.host_ram / GiB:.1f} GiB in host RAM"
    ]
    if ranks > 1:
        lines[0] += f"; each job split over {ranks} GPUs (weights on every GPU, video activations divided)"
    for shape in shapes:
        est = estimate(plan, shape, ranks=ranks)
        verdict = "fits" if est.peak <= usable_vram(vram_bytes) else "REFUSED"
        lines.append(f"  {shape.label()}: ≈ {est.peak / GiB:.1f} GiB peak ({est.peak_phase}) — {verdict}")
    return "\n".join(lines)
