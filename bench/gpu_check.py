"""One-shot GPU check: the real sizes on a CUDA card, written as JSON and a markdown table.

    python bench/gpu_check.py --out DIR              # on a CUDA machine: well under 10 minutes on an H200
    python bench/gpu_check.py --out DIR --dry-run    # the same code paths on the CPU at tiny sizes (~1 min)

No weights are needed: components are built from the real configs (pipeline/weights/registry.py)
with random weights drawn on the device from a fixed seed. Sections, each timed and recorded even
when it fails (the next one still runs):

1. tiny_e2e: the tiny model end to end in bf16 (a valid MP4, 11 passes, finite latents).
2. transformer: the real transformer, time per pass and peak activation memory at the stage-1
   and stage-2 token counts of 768x512x121 and 1536x1024x121, eager and with regional
   torch.compile (compile time apart); the SDPA kernel torch picked.
3. plans: each memory plan under an emulated card (`torch.cuda.set_per_process_memory_fraction`
   for 24, 48 and 80 GB; the whole card for `resident`): fits or not, the transformer's measured
   weights and pass peak beside the planner's estimate, time per pass.
4. components: the video VAE decode of a 1536x1024x121 latent tiled (the runtime's reference
   tiling) and untiled; the x2 upsampler; audio VAE + vocoder; Gemma 3 12B on a 1,024-token
   prompt resident and swapped in from pinned host RAM (`EncoderSwap`), with the connectors.
5. oom_recovery: a tiny-model job made to exceed a capped card fails as `OutOfMemory`; the next
   job succeeds and memory returns to its baseline.
6. projection: whole-job time per plan from the parts, beside the FLOP floor and the published
   anchors (SGLang LTX-2 on an H100: 768x512x121 9.5 s bf16; two-stage 1536x1024x121 53 s).

Writes DIR/gpu_check.json (every figure), DIR/gpu_check.md (the tables) and DIR/calibration.json
(the measured activation terms, in the format pipeline/placement/plan.py reads when it is copied
to pipeline/placement/calibration.json). On the lent device (no network, no diffusers): see
BENCHMARKS.md, "GPU check", for the one `device run` command with `make gpu-bundle`'s wheels.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.errors import OutOfMemory  # noqa: E402
from pipeline.generation.decode import tiled_decode  # noqa: E402
from pipeline.geometry import Geometry, job_geometry  # noqa: E402
from pipeline.params import GenerationParams  # noqa: E402
from pipeline.placement import apply as placement  # noqa: E402
from pipeline.placement import plan as planner  # noqa: E402
from pipeline.weights import registry  # noqa: E402

GiB = 2**30
H100_BF16_DENSE = 989e12  # also the H200's: the same Hopper die, more and faster memory
ANCHORS = {  # published end-to-end times on an H100 (ltx-2.3.md)
    (768, 512, 121): ("SGLang LTX-2, 8 steps, bf16", 9.5),
    (1536, 1024, 121): ("LTX-2 two-stage (70.5 GB)", 53.0),
}
CARDS_GIB = {"resident": None, "encoder-offload": 80, "fp8": 48, "offload": 24}


@dataclass
class Sizes:
    """What one run measures: real sizes on a GPU, tiny ones for the dry run."""

    configs: dict[str, dict[str, Any]]
    jobs: list[tuple[int, int, int]]  # (width, height, frames): the anchors
    plan_job: tuple[int, int, int]  # the stage-2 pass each plan is timed at
    prompt_tokens: int
    timed_passes: int
    small_job: str  # the tiny model's jobs: end to end, and before / after the OOM
    large_job: tuple[str, int]  # the tiny model's job that a capped card cannot hold (resolution, frames)


# The large tiny-model job must pass admission (the real model's estimate) on an 80 GB card too,
# so that it fails by running out of memory, not by being refused.
REAL = Sizes(registry.REAL_CONFIGS, [(768, 512, 121), (1536, 1024, 121)], (768, 512, 121), 1024, 3, "256x256",
             ("1024x576", 121))


def tiny_sizes() -> Sizes:
    from pipeline.weights.tiny import TINY_CONFIGS  # deferred: builds nothing, but only the dry run needs it

    # 128 prompt tokens: the tiny connectors' learnable registers need a multiple of 128
    return Sizes(TINY_CONFIGS, [(128, 128, 17), (256, 256, 17)], (128, 128, 17), 128, 1, "128x128", ("128x128", 9))


@dataclass
class Check:
    device: torch.device
    sizes: Sizes
    dry_run: bool
    deadline: float
    dtype: torch.dtype = torch.bfloat16  # the dry run's CPU computes float32: bf16 kernels crawl there
    records: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.cuda else 0

    @contextlib.contextmanager
    def peak(self) -> Iterator[dict[str, int]]:
        """{"before", "peak"}: bytes allocated before the block and at its highest (0 on a CPU)."""
        self.sync()
        out = {"before": self.allocated(), "peak": 0}
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        yield out
        self.sync()
        out["peak"] = torch.cuda.max_memory_allocated(self.device) if self.cuda else 0

    def timed(self, fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
        """(median seconds of `repeat` calls, last result)."""
        times, result = [], None
        for _ in range(repeat):
            self.sync()
            clock = time.perf_counter()
            result = fn()
            self.sync()
            times.append(time.perf_counter() - clock)
        return float(np.median(times)), result


def random_module(
    name: str, sizes: Sizes, device: torch.device, seed: int, config: Any = None, dtype: torch.dtype = torch.bfloat16
) -> torch.nn.Module:
    """A component of the given configs with N(0, 0.02) weights drawn on `device` in `dtype`, buffers cast alike."""
    cls = registry.COMPONENT_CLASSES[name]
    from accelerate import init_empty_weights  # deferred: accelerate is only needed to build on meta

    with init_empty_weights(include_buffers=False):
        module = cls(config) if config is not None else cls(**sizes.configs[name])
    if name == "text_encoder":
        module.lm_head = torch.nn.Identity()  # as placed: hidden states only
    generator = torch.Generator(device=device).manual_seed(seed)
    for sub in module.modules():
        for key, param in list(sub._parameters.items()):
            if param is None:
                continue
            tensor = torch.empty(param.shape, dtype=dtype if param.is_floating_point() else param.dtype, device=device)
            if tensor.is_floating_point():
                tensor.normal_(0.0, 0.02, generator=generator)
            sub._parameters[key] = torch.nn.Parameter(tensor, requires_grad=False)
        for key, buffer in list(sub._buffers.items()):
            if buffer is not None:  # as from_pretrained(torch_dtype=bf16) casts them
                sub._buffers[key] = buffer.to(device, dtype if buffer.is_floating_point() else buffer.dtype)
    return module.eval()


def text_config(sizes: Sizes) -> Any:
    if sizes.configs is registry.REAL_CONFIGS:
        return registry.gemma_config()
    from pipeline.weights.tiny import _tiny_text_encoder  # deferred: the dry run's tiny Gemma config

    return _tiny_text_encoder().config


# ---- the sections ----------------------------------------------------------------------------


def _image() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((512, 768, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def tiny_e2e(check: Check, work: Path) -> dict[str, Any]:
    import imageio_ffmpeg  # deferred: only this section reads an MP4 back

    from pipeline.generation.runtime import VideoGenerator  # deferred: diffusers, after the environment report
    from pipeline.weights.tiny import ensure_tiny_model  # deferred: builds the tiny model on first use

    weights = ensure_tiny_model(work / "cache")  # where Engine.load(tiny) looks too (oom_recovery)
    generator = VideoGenerator.from_directory(weights, device=check.device, dtype=check.dtype)
    request = GenerationParams(prompt="waves at dusk", num_frames=25, resolution=check.sizes.small_job, seed=7)
    finite: list[bool] = []
    handle = generator.components.transformer.register_forward_hook(
        lambda module, args, out: finite.append(all(bool(torch.isfinite(v).all()) for v in out)))
    seconds, result = check.timed(lambda: generator.generate(request, _image(), work / "tiny.mp4", image_crf=0))
    handle.remove()
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(result.path))
    return {"passes": result.transformer_passes, "finite": all(finite), "mp4_frames": frames, "seconds": seconds,
            "plan": generator.execution.plan if generator.execution else "cpu",
            "ok": result.transformer_passes == 11 and all(finite) and len(finite) == 11 and frames == 25}


def _pass_inputs(
    transformer: torch.nn.Module, geometry: Geometry, stage: int, device: torch.device, dtype: torch.dtype
) -> dict:
    """The keyword arguments of one transformer pass (as VideoGenerator.velocity builds them), random."""
    frames, height, width = geometry.latent_shape(stage)
    tokens, audio = frames * height * width, geometry.audio_latent_frames
    config = transformer.config
    g = torch.Generator(device=device).manual_seed(stage)
    randn = lambda *shape: torch.randn(*shape, generator=g, device=device, dtype=dtype)  # noqa: E731
    text = config.cross_attention_dim
    prompt = 1024 if text == 4096 else 64
    return dict(
        hidden_states=randn(1, tokens, config.in_channels),
        audio_hidden_states=randn(1, audio, config.audio_in_channels),
        encoder_hidden_states=randn(1, prompt, text),
        audio_encoder_hidden_states=randn(1, prompt, config.audio_cross_attention_dim),
        timestep=torch.full((1, tokens), 500.0, device=device), audio_timestep=torch.full((1,), 500.0, device=device),
        sigma=torch.full((1,), 500.0, device=device), encoder_attention_mask=torch.ones(1, prompt, device=device),
        audio_encoder_attention_mask=torch.ones(1, prompt, device=device), num_frames=frames, height=height,
        width=width, fps=24.0, audio_num_frames=audio,
        video_coords=transformer.rope.prepare_video_coords(1, frames, height, width, device, fps=24.0),
        audio_coords=transformer.audio_rope.prepare_audio_coords(1, audio, device),
        use_cross_timestep=True, return_dict=False,
    )


def _hidden_unit(geometry: Geometry, stage: int, configs: dict) -> int:
    config = configs["transformer"]
    video = config["num_attention_heads"] * config["attention_head_dim"]
    audio = config["audio_num_attention_heads"] * config["audio_attention_head_dim"]
    return (geometry.video_tokens(stage) * video + geometry.audio_latent_frames * audio) * 2


def _stage_points(sizes: Sizes) -> list[tuple[Geometry, int]]:
    """(geometry, stage) of each distinct pass size of the anchor jobs, smallest first."""
    seen, points = set(), []
    for job in sizes.jobs:
        geometry = job_geometry(*job)
        for stage in (1, 2):
            if geometry.video_tokens(stage) not in seen:
                seen.add(geometry.video_tokens(stage))
                points.append((geometry, stage))
    return sorted(points, key=lambda p: p[0].video_tokens(p[1]))


def _sdpa_kernel(transformer: torch.nn.Module, inputs: dict) -> str:
    """The attention kernel(s) torch dispatched to in one pass, from the profiler's op names."""
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        transformer(**inputs)
    names = {event.key for event in prof.key_averages() if "attention" in event.key and "scaled_dot" in event.key}
    return ", ".join(sorted(names)) or "none seen"


def transformer_passes(check: Check) -> dict[str, Any]:
    sizes = check.sizes
    clock = time.perf_counter()
    transformer = random_module("transformer", sizes, check.device, seed=0, dtype=check.dtype)
    transformer.set_attention_backend("native")
    out: dict[str, Any] = {"build_s": time.perf_counter() - clock, "passes": []}
    out["weights_bytes"] = check.allocated()
    points = _stage_points(sizes)
    out["sdpa_kernel"] = _sdpa_kernel(transformer, _pass_inputs(transformer, points[0][0], points[0][1],
                                                                 check.device, check.dtype))
    with torch.no_grad():
        for compiled in (False, True):
            if compiled and check.left() < 240:  # inductor on the real block takes minutes: keep the rest
                out["compile_skipped"] = f"{check.left():.0f} s left of the budget"
                break
            if compiled:
                # the dry run's CPU has no time for inductor's C++ builds: Dynamo with the eager backend
                options = {"backend": "eager"} if not check.cuda else {}
                placement.compile_transformer(transformer, **options)
            # compiled, the dry run times one size: each new shape is a Dynamo recompile, seconds on a CPU
            for geometry, stage in points if check.cuda or not compiled else points[:1]:
                if check.left() < 60:
                    out.setdefault("skipped", []).append(f"{geometry.label()} stage {stage} compiled={compiled}")
                    continue
                inputs = _pass_inputs(transformer, geometry, stage, check.device, check.dtype)
                first, _ = check.timed(partial(transformer, **inputs))  # warm-up / compile
                with check.peak() as memory:
                    seconds, _ = check.timed(partial(transformer, **inputs), sizes.timed_passes)
                activations = memory["peak"] - memory["before"]
                out["passes"].append({
                    "job": geometry.label(), "stage": stage, "video_tokens": geometry.video_tokens(stage),
                    "compiled": compiled, "first_pass_s": first, "pass_s": seconds, "activation_bytes": activations,
                    "activation_widths": activations / _hidden_unit(geometry, stage, sizes.configs),
                })
                del inputs
    del transformer
    torch._dynamo.reset()
    check.free()
    return out


def plans(check: Check) -> dict[str, Any]:
    """Each plan applied to the real transformer under an emulated card; one stage-2 pass of the plan job."""
    sizes, results = check.sizes, []
    geometry = job_geometry(*sizes.plan_job)
    total = torch.cuda.get_device_properties(check.device).total_memory if check.cuda else None
    for plan, card in CARDS_GIB.items():
        if check.left() < 90:
            results.append({"plan": plan, "skipped": "time budget"})
            continue
        row: dict[str, Any] = {"plan": plan, "card_gib": card or (total / GiB if total else None)}
        # bf16 even in the dry run: the fp8 plan computes in bf16 (pipeline.placement.apply.COMPUTE_DTYPE)
        transformer = random_module("transformer", sizes, check.device, seed=0)
        transformer.set_attention_backend("native")
        if planner.spec(plan).transformer != "bf16":
            transformer.to("cpu")  # these plans start from host tensors (pipeline.placement.apply.load_device)
        check.free()
        try:
            if check.cuda and card is not None:
                torch.cuda.set_per_process_memory_fraction(min(1.0, card * GiB / total), check.device)
            clock = time.perf_counter()
            placement.place_component("transformer", transformer, plan, check.device)
            row["place_s"] = time.perf_counter() - clock
            inputs = _pass_inputs(transformer, geometry, 2, check.device, torch.bfloat16)
            with torch.no_grad():
                row["first_pass_s"], _ = check.timed(partial(transformer, **inputs))
                with check.peak() as memory:
                    row["pass_s"], _ = check.timed(partial(transformer, **inputs), sizes.timed_passes)
            row.update(fits=True, resident_bytes=memory["before"], peak_bytes=memory["peak"])
            if sizes.configs is registry.REAL_CONFIGS:
                row["estimate_bytes"] = (planner.transformer_weight_bytes(plan)
                                         + planner._transformer_activation_bytes(geometry, planner.Calibration()))
            row["non_block_layers_on"] = str(transformer.proj_in.weight.device)
            del inputs
        except torch.OutOfMemoryError as exc:
            row.update(fits=False, error=str(exc).splitlines()[0])
        finally:
            del transformer
            check.free()
            if check.cuda:
                torch.cuda.set_per_process_memory_fraction(1.0, check.device)
        results.append(row)
    return {"job": geometry.label(), "rows": results}


def _decode(vae: torch.nn.Module, latent: torch.Tensor) -> torch.Size:
    return vae.decode(latent, return_dict=False)[0].shape


def _decode_tiled(vae: torch.nn.Module, latent: torch.Tensor) -> list[torch.Size]:
    """The runtime's decode: the reference's tiles, one temporal group at a time."""
    return [chunk.shape for chunk in tiled_decode(lambda z: vae.decode(z, return_dict=False)[0], latent)]


def _audio(audio_vae: torch.nn.Module, vocoder: torch.nn.Module, latents: torch.Tensor) -> torch.Size:
    return vocoder(audio_vae.decode(latents, return_dict=False)[0]).shape


def components(check: Check) -> dict[str, Any]:
    sizes, out = check.sizes, {}
    big = job_geometry(*sizes.jobs[-1])
    with torch.no_grad():
        vae = random_module("vae", sizes, check.device, seed=1, dtype=check.dtype)
        latent = torch.randn(1, sizes.configs["vae"]["latent_channels"], *big.latent_shape(2), device=check.device,
                             dtype=check.dtype)
        for name, run in (("tiled", partial(_decode_tiled, vae, latent)), ("untiled", partial(_decode, vae, latent))):
            if check.left() < 45:
                out[f"vae_decode_{name}"] = {"skipped": "time budget"}
                continue
            try:
                with check.peak() as memory:
                    seconds, _ = check.timed(run)
                out[f"vae_decode_{name}"] = {"job": big.label(), "seconds": seconds,
                                             "peak_bytes": memory["peak"] - memory["before"]}
            except torch.OutOfMemoryError as exc:
                out[f"vae_decode_{name}"] = {"job": big.label(), "error": str(exc).splitlines()[0]}
            check.free()
        del vae, latent
        check.free()

        upsampler = random_module("latent_upsampler", sizes, check.device, seed=2, dtype=check.dtype)
        stage1 = torch.randn(1, sizes.configs["latent_upsampler"]["in_channels"], *big.latent_shape(1),
                             device=check.device, dtype=check.dtype)
        with check.peak() as memory:
            seconds, _ = check.timed(partial(upsampler, stage1))
        out["upsampler"] = {"job": big.label(), "seconds": seconds, "peak_bytes": memory["peak"] - memory["before"]}
        del upsampler, stage1
        check.free()

        audio_vae = random_module("audio_vae", sizes, check.device, seed=3, dtype=check.dtype)
        vocoder = random_module("vocoder", sizes, check.device, seed=4, dtype=check.dtype)
        config = sizes.configs["audio_vae"]
        mel_bins = config["mel_bins"] // audio_vae.mel_compression_ratio
        latents = torch.randn(1, config["latent_channels"], big.audio_latent_frames, mel_bins, device=check.device,
                              dtype=check.dtype)
        seconds, _ = check.timed(partial(_audio, audio_vae, vocoder, latents))
        out["audio"] = {"job": big.label(), "seconds": seconds}
        del audio_vae, vocoder, latents
        check.free()
        if check.left() > 90:
            out["text"] = _text_encoder(check)
        else:
            out["text"] = {"skipped": "time budget"}
    return out


def _encode(gemma: torch.nn.Module, connectors: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> Any:
    """As VideoGenerator.encode_prompt: Gemma's hidden states, stacked, through the connectors."""
    hidden = gemma(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    stacked = torch.stack(hidden, dim=-1).flatten(2, 3).to(hidden[0].dtype)
    del hidden
    return connectors(stacked, mask, padding_side="left")


def _text_encoder(check: Check) -> dict[str, Any]:
    """Gemma 3 on a full-length prompt, resident then swapped in from pinned host RAM, + the connectors."""
    sizes, out = check.sizes, {}
    gemma = random_module("text_encoder", sizes, check.device, seed=5, config=text_config(sizes), dtype=check.dtype)
    gemma.set_attn_implementation("sdpa")
    connectors = random_module("connectors", sizes, check.device, seed=6, dtype=check.dtype)
    connectors.set_attention_backend("native")
    tokens = sizes.prompt_tokens
    vocab = gemma.config.text_config.vocab_size
    ids = torch.randint(0, vocab, (1, tokens), device=check.device, generator=torch.Generator(check.device))
    mask = torch.ones(1, tokens, dtype=torch.long, device=check.device)
    mask[:, : tokens // 4] = 0  # left padding, as a short prompt has

    encode = partial(_encode, gemma, connectors, ids, mask)
    with torch.no_grad():
        check.timed(encode)  # warm-up
        with check.peak() as memory:
            out["resident_s"], _ = check.timed(encode)
        out["encode_extra_bytes"] = memory["peak"] - memory["before"]
        lm = placement.language_model(gemma)
        lm.to("cpu")
        check.free()
        swap = placement.EncoderSwap(gemma, [lm], check.device)
        out["swapped_s"], _ = check.timed(encode)
        out["swap_bytes"] = swap.nbytes
        swap.remove()
    out["prompt_tokens"] = tokens
    del gemma, connectors, swap, lm, encode
    check.free()
    return out


def oom_recovery(check: Check, work: Path) -> dict[str, Any]:
    """A job that exceeds the card fails as OutOfMemory; the next succeeds with memory back to its baseline."""
    from pipeline.engine import Engine, EngineSpec  # deferred: loads the tiny model through the door

    engine = Engine.load(EngineSpec(weights="tiny", data_dir=work, device=str(check.device)))
    small = GenerationParams(prompt="a boat", num_frames=9, resolution=check.sizes.small_job, seed=1)
    resolution, frames = check.sizes.large_job
    large = GenerationParams(prompt="a boat", num_frames=frames, resolution=resolution, seed=1)
    engine.generate(small, _image(), work / "before.mp4", image_crf=0)
    check.free()
    baseline = check.allocated()
    handle = None
    if check.cuda:  # a real OOM: cap the card just above what the loaded model holds
        total = torch.cuda.get_device_properties(check.device).total_memory
        torch.cuda.set_per_process_memory_fraction((baseline + 64 * 2**20) / total, check.device)
    else:  # no allocator limit on a CPU: the same failure, injected where a GPU would raise it
        def exhaust(module: torch.nn.Module, args: tuple) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated on the CPU)")
        handle = engine._generator.components.transformer.register_forward_pre_hook(exhaust)
    out: dict[str, Any] = {"simulated": not check.cuda, "baseline_bytes": baseline}
    try:
        engine.generate(large, _image(), work / "large.mp4", image_crf=0)
        out["failed_as_oom"] = False
    except OutOfMemory as exc:
        out.update(failed_as_oom=True, phase=exc.phase, message=str(exc))
    finally:
        if handle is not None:
            handle.remove()
        if check.cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, check.device)
    out["after_oom_bytes"] = check.allocated()
    result = engine.generate(small, _image(), work / "after.mp4", image_crf=0)
    check.free()
    out.update(next_job_ok=result.path.is_file() and result.transformer_passes == 11,
               after_next_job_bytes=check.allocated())
    out["ok"] = out["failed_as_oom"] and out["next_job_ok"] and out["after_next_job_bytes"] <= baseline + 2**20
    del engine
    check.free()
    return out


def projection(check: Check) -> dict[str, Any]:
    """Whole-job seconds per plan from the measured parts, the FLOP floor and the anchors."""
    from gpu_floor import count_pass  # deferred: the FLOP counter of bench/gpu_floor.py (meta device)

    records = check.records
    passes = [p for p in records.get("transformer", {}).get("passes", []) if not p["compiled"]]
    compiled = {p["video_tokens"]: p["pass_s"] for p in records.get("transformer", {}).get("passes", [])
                if p["compiled"]}
    eager = {p["video_tokens"]: p["pass_s"] for p in passes}
    plan_rows = {r["plan"]: r for r in records.get("plans", {}).get("rows", []) if r.get("fits")}
    parts = records.get("components", {})
    text = parts.get("text", {})
    meta = registry.meta_module("transformer", check.sizes.configs)
    rows = []
    for job in check.sizes.jobs:
        geometry = job_geometry(*job)
        t1, t2 = geometry.video_tokens(1), geometry.video_tokens(2)
        flops = sum(steps * count_pass(meta, *geometry.latent_shape(stage), geometry.audio_latent_frames)
                    for stage, steps in ((1, 8), (2, 3)))
        anchor = ANCHORS.get(job)
        row = {"job": geometry.label(), "flop_floor_s": flops / H100_BF16_DENSE, "pflop": flops / 1e15,
               "anchor": anchor[0] if anchor else None, "anchor_s": anchor[1] if anchor else None}
        if t1 in eager and t2 in eager:
            scale = geometry.width * geometry.height / (check.sizes.jobs[-1][0] * check.sizes.jobs[-1][1])
            decode = parts.get("vae_decode_tiled", {}).get("seconds", 0.0) * scale
            rest = parts.get("upsampler", {}).get("seconds", 0.0) + parts.get("audio", {}).get("seconds", 0.0) + decode
            for plan in planner.PLANS:
                resident_pass = plan_rows.get("resident", {}).get("pass_s")
                plan_pass = plan_rows.get(plan, {}).get("pass_s")
                if plan not in plan_rows or not resident_pass:
                    continue
                factor = plan_pass / resident_pass  # the plan's cost per pass, measured at the plan job
                denoise = (8 * eager[t1] + 3 * eager[t2]) * factor
                encode = text.get("resident_s" if plan == "resident" else "swapped_s", 0.0)
                row[f"{plan}_s"] = denoise + rest + encode
                row[f"{plan}_cached_prompt_s"] = denoise + rest
            if t1 in compiled and t2 in compiled:
                row["resident_compiled_cached_prompt_s"] = 8 * compiled[t1] + 3 * compiled[t2] + rest
        rows.append(row)
    return {"rows": rows, "note": "fp8/offload encode uses the swapped-in time (their Gemma streams layer by layer)"}


# ---- output ----------------------------------------------------------------------------------


def _gib(value: Any) -> str:
    return f"{value / GiB:.2f}" if isinstance(value, (int, float)) else "–"


def _s(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


def markdown(report: dict[str, Any]) -> str:
    r = report["records"]
    lines = [f"GPU check on {report['device_name']} ({report['torch']}, {report['mode']}), "
             f"{report['seconds']:.0f} s", ""]
    for name, status in report["status"].items():
        lines.append(f"- {name}: {status}")
    t = r.get("transformer", {})
    if t.get("passes"):
        lines += ["", f"Transformer passes (SDPA: {t.get('sdpa_kernel')}):", "",
                  "| job | stage | video tokens | compiled | first pass s | pass s | activations GiB | widths/token |",
                  "|---|---:|---:|---|---:|---:|---:|---:|"]
        for p in t["passes"]:
            lines.append(f"| {p['job']} | {p['stage']} | {p['video_tokens']} | {p['compiled']} | "
                         f"{_s(p['first_pass_s'])} | {_s(p['pass_s'])} | {_gib(p['activation_bytes'])} | "
                         f"{p['activation_widths']:.1f} |")
    if r.get("plans", {}).get("rows"):
        lines += ["", f"Plans under emulated cards (one stage-2 pass of {r['plans']['job']}):", "",
                  "| plan | card GiB | fits | weights GiB | peak GiB | estimate GiB | pass s | non-block layers |",
                  "|---|---:|---|---:|---:|---:|---:|---|"]
        for row in r["plans"]["rows"]:
            lines.append(f"| {row['plan']} | {_s(row.get('card_gib'))} | {row.get('fits', row.get('skipped'))} | "
                         f"{_gib(row.get('resident_bytes'))} | {_gib(row.get('peak_bytes'))} | "
                         f"{_gib(row.get('estimate_bytes'))} | {_s(row.get('pass_s'))} | "
                         f"{row.get('non_block_layers_on', '–')} |")
    parts = r.get("components", {})
    if parts:
        lines += ["", "| component | job | seconds | peak GiB |", "|---|---|---:|---:|"]
        for name in ("vae_decode_tiled", "vae_decode_untiled", "upsampler", "audio"):
            part = parts.get(name, {})
            lines.append(f"| {name} | {part.get('job', '–')} | {_s(part.get('seconds'))} | "
                         f"{_gib(part.get('peak_bytes'))} |")
        text = parts.get("text", {})
        lines.append(f"| text encoder resident ({text.get('prompt_tokens')} tokens) | | {_s(text.get('resident_s'))} "
                     f"| {_gib(text.get('encode_extra_bytes'))} |")
        lines.append(f"| text encoder swapped in ({_gib(text.get('swap_bytes'))} GiB) | | "
                     f"{_s(text.get('swapped_s'))} | |")
    oom = r.get("oom_recovery", {})
    if oom:
        lines += ["", f"OOM recovery ({'simulated' if oom.get('simulated') else 'real'}): failed as OOM "
                  f"{oom.get('failed_as_oom')} (phase {oom.get('phase')}), next job ok {oom.get('next_job_ok')}, "
                  f"memory {_gib(oom.get('baseline_bytes'))} -> {_gib(oom.get('after_next_job_bytes'))} GiB"]
    proj = r.get("projection", {}).get("rows", [])
    if proj:
        plans = [p for p in planner.PLANS if any(f"{p}_s" in row for row in proj)]
        lines += ["", "Projected whole job, seconds (cold prompt / cached prompt):", "",
                  "| job | " + " | ".join(plans) + " | resident compiled, cached | H100 FLOP floor | anchor |",
                  "|---|" + "---:|" * (len(plans) + 3)]
        for row in proj:
            cells = [f"{_s(row.get(f'{p}_s'))} / {_s(row.get(f'{p}_cached_prompt_s'))}" for p in plans]
            anchor = f"{row['anchor']}: {row['anchor_s']} s" if row.get("anchor") else "–"
            compiled = _s(row.get("resident_compiled_cached_prompt_s"))
            floor = _s(row["flop_floor_s"])
            lines.append(f"| {row['job']} | " + " | ".join(cells) + f" | {compiled} | {floor} | {anchor} |")
    return "\n".join(lines) + "\n"


def calibration(report: dict[str, Any]) -> dict[str, Any] | None:
    """The measured activation terms, in the planner's calibration format (real sizes on CUDA only)."""
    if report["mode"] != "cuda":
        return None
    r, out = report["records"], {"device": report["device_name"], "date": report["date"], "torch": report["torch"]}
    passes = [p for p in r.get("transformer", {}).get("passes", []) if not p["compiled"]]
    if passes:
        out["activation_widths"] = max(p["activation_widths"] for p in passes)
    text = r.get("components", {}).get("text", {})
    if "encode_extra_bytes" in text:
        out["encode_extra_bytes"] = text["encode_extra_bytes"]
    out["peaks"] = r.get("plans", {}).get("rows", [])
    return out


def run(out_dir: Path, dry_run: bool, budget_s: float, sections: list[str] | None = None) -> dict[str, Any]:
    """Run the sections, write gpu_check.json / .md (and calibration.json on CUDA); returns the report."""
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --dry-run for the CPU rehearsal)")
    device = torch.device("cpu" if dry_run else "cuda")
    import diffusers  # deferred: its version goes in the report; the pipeline imports it anyway

    print(f"gpu_check: torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU dry run'}", flush=True)
    check = Check(device, tiny_sizes() if dry_run else REAL, dry_run, time.perf_counter() + budget_s,
                  torch.float32 if dry_run else torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    status: dict[str, str] = {}
    report: dict[str, Any] = {}

    def write() -> None:
        # After every section: a run stopped at its time limit still leaves what it measured.
        report.update({
            "mode": "cuda" if check.cuda else "dry-run (CPU, tiny sizes)", "date": time.strftime("%Y-%m-%d"),
            "device_name": torch.cuda.get_device_name(device) if check.cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "seconds": time.perf_counter() - started, "status": status, "records": check.records,
        })
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        (out_dir / "gpu_check.md").write_text(markdown(report))
        measured = calibration(report)
        if measured is not None:
            (out_dir / "calibration.json").write_text(json.dumps(measured, indent=1, default=str))

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("tiny_e2e", lambda: tiny_e2e(check, work)), ("transformer", lambda: transformer_passes(check)),
            ("plans", lambda: plans(check)), ("components", lambda: components(check)),
            ("oom_recovery", lambda: oom_recovery(check, work)), ("projection", lambda: projection(check)),
        ]
        for name, step in steps:
            if sections and name not in sections:
                continue
            clock = time.perf_counter()
            try:
                check.records[name] = step()
                ok = check.records[name].get("ok", True)
                status[name] = f"{'ok' if ok else 'CHECK FAILED'} in {time.perf_counter() - clock:.1f} s"
            except Exception as exc:  # one section's failure must not cost the others (one device run)
                check.records[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                status[name] = f"ERROR {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                check.free()
            print(f"gpu_check: {name}: {status[name]}", flush=True)
            write()
    write()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for gpu_check.json / .md")
    parser.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU at tiny sizes")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip heavy steps past this many seconds")
    parser.add_argument("--sections", nargs="*", help="run only these sections")
    args = parser.parse_args(argv)
    report = run(args.out, args.dry_run, args.budget_s, args.sections)
    print((args.out / "gpu_check.md").read_text())
    return 0 if all(not s.startswith(("ERROR", "CHECK")) for s in report["status"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
