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

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from pipeline.errors import PlanError, RequestTooLarge
from pipeline.geometry import REFERENCE_TILING, VAE_SPATIAL, Geometry, job_geometry

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

# Activation terms, each backed by a measurement on the real widths: tests/unit/pipeline/
# test_memory_constants.py runs the real-config modules on the meta device under a tensor-lifetime
# tracker (tests/support/tensor_memory.py: what torch.cuda.max_memory_allocated would report, with
# flash / memory-efficient SDPA) and checks each figure against it. A GPU's measured peaks, when
# recorded in calibration.json beside this module, replace them (`load_calibration`).
#
# Denoising: hidden-state-sized bf16 tensors alive at the peak of a transformer pass, per video
# token (x 4096) and audio token (x 2048). Measured 36.8 on a 2-layer model with the real widths
# (slope over 2,048-6,144 video tokens; the peak does not depend on the layer count): the per-token
# modulation held for the whole pass, RoPE in fp32, and inside a block the per-block copy of the
# 9 x 4096 per-token `temb` (`get_mod_params`) beside the residual, norm output and the 4x-wide
# feed-forward intermediate. 38: the measurement rounded up.
TRANSFORMER_ACTIVATION_WIDTHS = 38
# VAE decoder: bytes alive per *output* pixel (frames x height x width) of one decoder call, its
# activations at 8 pixel frames per latent frame (72 inside a 9-latent-frame tile that yields 65)
# included. Measured 73-74 on the real decoder in bf16 at 128-512 px tiles; 80 with a margin.
DECODE_BYTES_PER_PIXEL = 80
# Ulysses all-to-all (context parallelism over N GPUs): q, k, v and the attention output exist
# before and after the exchange, each 1/N of the video tokens at full width.
ULYSSES_WIDTHS = 8
# Plans a job split over N GPUs can use: fp8 and the resident plans combine with the split; block
# offload does not (each GPU would stream all 48 blocks over PCIe for 1/N of the work).
GROUP_PLANS = ("resident", "encoder-offload", "fp8")
# The runtime decodes with the reference's tiling (pipeline.generation.decode, ltx-core's
# TilingConfig.default()), one temporal group at a time: up to 64 + 1 pixel frames (8 latent
# frames plus the one a later group re-reads for its causal first frame), in spatial tiles of at
# most 512 x 512 px (the 64 px overlap is inside the tile; the short side's tile is scaled down).
# Alive per group, at full frame size in bf16, counted in one-channel planes: while a tile
# decodes, its weighted sum (3) and weights (1), plus the previous group's carried overlap
# (4 planes x 25 frames); while its finished frames are divided out, 8 planes over the group
# (sum and weights, the quotient and clamped weights, the tail copied for the next group).
DECODE_GROUP_FRAMES = REFERENCE_TILING.tile_frames + 1
DECODE_CARRIED_FRAMES = REFERENCE_TILING.overlap_frames + 1
DECODE_GROUP_PLANES = 8
VAE_TILE = REFERENCE_TILING.tile_pixels  # the reference's spatial tile, overlap included
# Prompt encoding beyond the encoder's weights: Gemma's 49 hidden states of 1,024 x 3,840 in bf16
# (0.72 GiB), their stacked copy for the connectors, and a decoder layer's working set at the
# moment of the peak. Measured 1.79 GiB (Gemma + stack + connectors, real widths, 1,024 tokens).
ENCODE_EXTRA_BYTES = int(1.9 * GiB)
RUNTIME_MISC_BYTES = GiB // 2  # latents in fp32, RoPE coordinates, masks, cuBLAS workspaces

# Never plan into the last part of the card: the CUDA context and library handles (~1.5 GiB)
# and allocator fragmentation (~8 %) are not in any tensor count.
RESERVE_FIXED = int(1.5 * GiB)
RESERVE_FRACTION = 0.08

# Host RAM. Pinned host memory comes from CUDA's caching host allocator, which rounds every
# allocation up to a power of two; weights are pinned tensor by tensor, so each tensor rounds on
# its own (sums over the real configs' tensors in bf16, checked on the meta device by
# tests/unit/pipeline/test_memory_plan.py): the transformer's 48 blocks 34.6 GiB (raw 34.6), the
# connectors 6.8 (raw 5.9: their 1.4 GiB input projections round to 2), Gemma's text tower 24.5
# (raw 21.9) and its 48 decoder layers alone 22.5 (raw 20.0).
PINNED_TRANSFORMER_BLOCKS_BYTES = 37_128_652_800
PINNED_CONNECTORS_BYTES = 7_253_570_560
PINNED_TEXT_LANGUAGE_BYTES = 26_308_305_922
PINNED_TEXT_LAYERS_BYTES = 24_160_813_056
LARGEST_BLOCK_TENSOR_BYTES = 4 * 4096 * 4096 * BF16  # a feed-forward projection: the pinning transient
# Never plan into the host's last part: the OS, the worker's Python, torch and CUDA runtime
# (~3 GiB resident), the loader's mapped window and page cache for the weights file.
HOST_RESERVE_FIXED = 6 * GiB
HOST_RESERVE_FRACTION = 0.05

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

    @property
    def compile_blocker(self) -> str | None:
        """Why regional torch.compile cannot run under this plan, or None when it can.

        Checked with Dynamo on the CPU (tests/integration/pipeline/test_execution.py): with
        diffusers' layerwise casting (fp8) a fullgraph compile stops at the `torch.nn.Parameter()`
        the casting hook builds, and `fullgraph=False` breaks the graph at every Linear (~50x
        slower on the tiny model); with group offloading it stops at the `torch.compiler.disable()`d
        onload. Compilation is lazy, so either would fail (or crawl) at every job's first pass.
        """
        if self.transformer == "fp8":
            return "fp8 layerwise casting breaks the compiled graph at every layer"
        if self.transformer == "stream":
            return "group offloading's onload hooks are excluded from compilation"
        return None


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
    host_ram: int = 0  # pinned (rounded) and pageable host memory the plan keeps weights in
    host_load_extra: int = 0  # more host memory held for a moment while the weights are placed

    @property
    def host_peak(self) -> int:
        """Host RAM the plan needs at its highest (while loading)."""
        return self.host_ram + self.host_load_extra

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


def usable_host_ram(total_bytes: int) -> int:
    """Bytes of a host's physical RAM the planner may give to weights."""
    return int(total_bytes - HOST_RESERVE_FIXED - HOST_RESERVE_FRACTION * total_bytes)


@dataclass(frozen=True)
class Calibration:
    """The activation terms the estimates use: the defaults above, or a GPU's measured figures.

    `source` says which: "estimate" (the constants, measured by tensor accounting on the CPU) or
    the calibration file's device and date.
    """

    activation_widths: float = TRANSFORMER_ACTIVATION_WIDTHS
    encode_extra_bytes: int = ENCODE_EXTRA_BYTES
    decode_bytes_per_pixel: float = DECODE_BYTES_PER_PIXEL
    source: str = "estimate"


CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
_CALIBRATION_FIELDS = ("activation_widths", "encode_extra_bytes", "decode_bytes_per_pixel")


def load_calibration(path: Path | None = None) -> Calibration:
    """The calibration in `path` (default: calibration.json beside this module), or the defaults if absent.

    The file is what `bench/gpu_check.py` writes from measured peaks (`calibration.json` in its
    output directory): {"device", "date", "activation_widths", "encode_extra_bytes",
    "decode_bytes_per_pixel", ...}; fields it lacks keep their defaults. A malformed file is a
    `PlanError` naming it, never silently ignored.
    """
    path = CALIBRATION_FILE if path is None else Path(path)
    if not path.is_file():
        return Calibration()
    try:
        data = json.loads(path.read_text())
        values = {name: float(data[name]) for name in _CALIBRATION_FIELDS if name in data}
    except (ValueError, TypeError) as exc:
        raise PlanError(f"{path}: not a memory calibration ({exc})") from None
    if not values or any(not value > 0 for value in values.values()):
        raise PlanError(f"{path}: a calibration needs positive {', '.join(_CALIBRATION_FIELDS)}")
    if "encode_extra_bytes" in values:
        values["encode_extra_bytes"] = int(values["encode_extra_bytes"])
    source = f"measured on {data.get('device', 'a GPU')} ({data.get('date', 'undated')})"
    return Calibration(**values, source=source)


CALIBRATION = load_calibration()


def spec(plan: str) -> PlanSpec:
    try:
        return PLAN_SPECS[plan]
    except KeyError:
        raise PlanError(f"unknown plan {plan!r}; choose one of {', '.join(PLANS)}") from None


def needs_vae_tiling(width: int, height: int) -> bool:
    """Whether the decode splits frames into spatial tiles: the reference's tiling does above 512 px."""
    return max(width, height) > VAE_TILE


def _decode_bytes(shape: Geometry, tiled: bool, calibration: Calibration = Calibration()) -> int:
    """One temporal group's decode; `tiled` False: frames decoded whole (no spatial split), for comparison."""
    frames = min(DECODE_GROUP_FRAMES, shape.generated_frames)
    carried = min(DECODE_CARRIED_FRAMES, max(shape.generated_frames - frames, 0))
    tile_w, tile_h = (_tile_pixels(shape.width, shape), _tile_pixels(shape.height, shape)) if tiled else (
        shape.width, shape.height)
    plane = shape.width * shape.height * BF16
    decoding = int(frames * tile_w * tile_h * calibration.decode_bytes_per_pixel) + 4 * (frames + carried) * plane
    dividing = DECODE_GROUP_PLANES * frames * plane
    return max(decoding, dividing)


def _tile_pixels(axis: int, shape: Geometry) -> int:
    """A spatial tile's extent along one axis, as pipeline.generation.decode.spatial_tile_size sizes it.

    The 512 px tile scaled by this axis over the long side (a landscape frame gets shorter tiles
    in height), never under the overlap + 1 cells, never past the axis. Pure arithmetic here, so
    the planner stays free of torch; tests/unit/pipeline/test_memory_plan.py checks it against decode's.
    """
    cells, long_cells = axis // VAE_SPATIAL, max(shape.width, shape.height) // VAE_SPATIAL
    tile = VAE_TILE // VAE_SPATIAL
    size = max(max(2, REFERENCE_TILING.overlap_pixels // VAE_SPATIAL + 1), round(tile * cells / long_cells))
    return min(size, cells) * VAE_SPATIAL


def _transformer_activation_bytes(shape: Geometry, calibration: Calibration = Calibration(), ranks: int = 1) -> int:
    """One pass's activations on one GPU; with `ranks` > 1 the video tokens are split (context parallelism).

    Split: each GPU holds 1/N of the video tokens' activations plus Ulysses' all-to-all buffers
    (q, k, v and the output, before and after the exchange: 8 more widths over the share), and
    the gathered full-length output (C=128 fp32: counted in RUNTIME_MISC_BYTES). The audio
    stream (hundreds of tokens) is whole on every GPU.
    """
    widths = calibration.activation_widths
    tokens = shape.video_tokens(2)
    if ranks > 1:
        share = -(-tokens // ranks)  # the largest share
        video = share * VIDEO_WIDTH * BF16 * (widths + ULYSSES_WIDTHS)
    else:
        video = tokens * VIDEO_WIDTH * BF16 * widths
    audio = shape.audio_latent_frames * AUDIO_WIDTH * BF16 * widths
    return int(video + audio)


def _upsampler_bytes(shape: Geometry) -> int:
    positions = shape.video_tokens(1)
    return positions * 1024 * BF16 * 4 + 4 * positions * 128 * 4 * 2  # mid activations + 2x output


def transformer_weight_bytes(plan: str) -> int:
    """GPU bytes of the transformer's weights under `plan` while it computes (bench/gpu_check.py measures them)."""
    s = spec(plan)
    block_bytes = TRANSFORMER_BLOCK_PARAMS // TRANSFORMER_LAYERS * BF16
    rest = TRANSFORMER_PARAMS - TRANSFORMER_BLOCK_PARAMS
    if s.transformer == "bf16":
        return TRANSFORMER_PARAMS * BF16
    if s.transformer == "fp8":
        # fp8 blocks + bf16 everything else; one block's bf16 copy exists while it computes.
        return TRANSFORMER_BLOCK_PARAMS * FP8 + rest * BF16 + block_bytes
    # stream: the non-block layers stay, two blocks in flight (computing + prefetching)
    return rest * BF16 + 2 * block_bytes


def estimate(
    plan: str, shape: Geometry, vae_tiling: bool | None = None, calibration: Calibration | None = None,
    ranks: int = 1,
) -> Estimate:
    """The estimated peak of one job of `shape` under `plan` on the GPU that peaks highest.

    `calibration`: default the module's `CALIBRATION`. `ranks` > 1: the job is split over that many
    GPUs (context parallelism). Weights are replicated (every GPU holds the whole transformer); the
    denoising activations divide; the text encoder, upsampler and decoder run on rank 0, whose peak
    this is (the other ranks hold less). Block offload does not combine with a split (`PlanError`).
    """
    if ranks > 1 and plan not in GROUP_PLANS:
        raise PlanError(f"memory plan {plan!r} cannot be combined with a job split over {ranks} GPUs; "
                        f"choose one of {', '.join(GROUP_PLANS)}")
    calibration = CALIBRATION if calibration is None else calibration
    s = spec(plan)
    tiled = needs_vae_tiling(shape.width, shape.height) if vae_tiling is None else vae_tiling
    transformer = transformer_weight_bytes(plan)
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
    host, load_extra = _host_bytes(s)
    phases = {
        "encode": encode_weights + calibration.encode_extra_bytes,
        "denoise": _transformer_activation_bytes(shape, calibration, ranks),
        "upsample": _upsampler_bytes(shape),
        "decode": _decode_bytes(shape, tiled, calibration),
    }
    return Estimate(plan, shape, weights, phases, tiled, host, load_extra)


def _host_bytes(s: PlanSpec) -> tuple[int, int]:
    """(host RAM the plan keeps weights in, more held for a moment while placing them)."""
    host, load_extra = 0, 0
    text_rest = (TEXT_ENCODER_PARAMS - TEXT_LANGUAGE_PARAMS) * BF16  # the unused vision tower, pageable
    if s.text_encoder == "swap":
        host += PINNED_TEXT_LANGUAGE_BYTES + text_rest
    elif s.text_encoder == "stream":  # its layers pinned; embeddings and final norm on the GPU
        host += PINNED_TEXT_LAYERS_BYTES + text_rest
    if s.transformer == "fp8":
        # cast to fp8 on the host (the bf16 source is the mapped file), then moved to the GPU
        load_extra = TRANSFORMER_BLOCK_PARAMS * FP8
    elif s.transformer == "stream":
        # blocks pinned one tensor at a time (apply.pin_in_place): one tensor's pageable copy at once
        host += PINNED_TRANSFORMER_BLOCKS_BYTES
        load_extra = LARGEST_BLOCK_TENSOR_BYTES
    if s.connectors == "stream":
        host += PINNED_CONNECTORS_BYTES
    return host, load_extra


def fits(plan: str, shape: Geometry, vram_bytes: int, ranks: int = 1) -> bool:
    return estimate(plan, shape, ranks=ranks).peak <= usable_vram(vram_bytes)


def host_fits(plan: str, host_ram_bytes: int | None) -> bool:
    """Whether a host with `host_ram_bytes` of physical RAM holds `plan`'s weights (None: not checked)."""
    if host_ram_bytes is None:
        return True
    return _host_need(plan) <= usable_host_ram(host_ram_bytes)


def _host_need(plan: str) -> int:
    host, load_extra = _host_bytes(spec(plan))
    return host + load_extra


def _host_refusal(plan: str, host_ram_bytes: int) -> str:
    return (
        f"plan {plan!r} needs ≈ {_host_need(plan) / GiB:.1f} GiB of host RAM for its weights (pinned, rounded "
        f"up to powers of two), but this host has {host_ram_bytes / GiB:.1f} GiB "
        f"({usable_host_ram(host_ram_bytes) / GiB:.1f} usable)"
    )


def choose_plan(
    vram_bytes: int, design: Geometry | None = None, host_ram_bytes: int | None = None, ranks: int = 1
) -> str:
    """The fastest plan whose estimate for the design request fits the card (and the host's RAM, when given).

    If none does, the smallest plan that fits the host: requests it cannot hold are refused one by
    one. A card or host too small for any plan is a `PlanError` that says which and why, raised
    when the worker starts, rather than a crash while loading that a supervisor would restart forever.
    With `ranks` > 1 only the plans that combine with a split job are candidates.
    """
    design = design or job_geometry(*DESIGN_REQUEST)
    if ranks > 1:
        for plan in GROUP_PLANS:
            if fits(plan, design, vram_bytes, ranks) and host_fits(plan, host_ram_bytes):
                return plan
        raise PlanError(f"a GPU with {vram_bytes / GiB:.0f} GiB cannot hold a job split over {ranks} GPUs "
                        f"under any of {', '.join(GROUP_PLANS)} (block offload does not combine with a split)")
    for plan in PLANS:
        if fits(plan, design, vram_bytes) and host_fits(plan, host_ram_bytes):
            return plan
    smallest = job_geometry(512, 512, 9)
    if not fits(PLANS[-1], smallest, vram_bytes):
        raise PlanError(
            f"a GPU with {vram_bytes / GiB:.0f} GiB cannot run LTX-2.3 under any plan "
            f"(even {smallest.label()} needs ≈ {estimate(PLANS[-1], smallest).peak / GiB:.1f} GiB usable)"
        )
    for plan in reversed(PLANS):  # the plan that holds the most requests, among those the host can hold
        if host_fits(plan, host_ram_bytes) and fits(plan, smallest, vram_bytes):
            return plan
    raise PlanError(f"no memory plan fits a {vram_bytes / GiB:.0f} GiB GPU on this host: "
                    f"{_host_refusal(PLANS[-1], host_ram_bytes)}")


def resolve_plan(
    requested: str | None, vram_bytes: int, host_ram_bytes: int | None = None, ranks: int = 1
) -> str:
    """`--plan auto|NAME`: the named plan (validated; checked against the host's RAM if given) or the automatic one."""
    if requested in (None, "", "auto"):
        return choose_plan(vram_bytes, host_ram_bytes=host_ram_bytes, ranks=ranks)
    plan = spec(requested).name
    if ranks > 1 and plan not in GROUP_PLANS:
        raise PlanError(f"memory plan {plan!r} cannot be combined with --gpus-per-job {ranks}: block offload "
                        f"streams every block through each GPU; choose one of {', '.join(GROUP_PLANS)}")
    if not host_fits(plan, host_ram_bytes):
        raise PlanError(_host_refusal(plan, host_ram_bytes))
    return plan


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
