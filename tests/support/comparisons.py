"""Side-by-side computations: Lightricks' reference code vs this project, on the same checkpoint.

Each `compare_*` function runs one piece of LTX-2.3 through ltx-core / ltx-pipelines 1.0.0 and
through our loader and runtime on identical inputs (and identical noise), in float32 on the CPU,
and returns `{quantity: (ours, reference)}`. The parity tests assert on them; `bench/fidelity.py`
prints them as the FIDELITY.md table. `relative_error` is max|ours - ref| / max|ref|: an
elementwise ratio is meaningless where the reference crosses zero.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ltx_reference import (
    VIDEO_LATENT,
    build_reference_checkpoint,
    reference_ledger,
)
from pipeline.generation.conditioning import condition_pixels, prepare_start_frame
from pipeline.generation.decode import tiled_decode
from pipeline.generation.runtime import VideoGenerator, _Text, _Tracker
from pipeline.generation.schedule import unpack_audio
from pipeline.geometry import Geometry, pixel_frames
from pipeline.params import GenerationParams
from pipeline.weights.loader import Components
from pipeline.weights.single_file import load_single_file

Pair = tuple[torch.Tensor, torch.Tensor]
PROMPT = "a tiny random model"
TEXT_TOKENS = 256  # two blocks of the connectors' 128 registers


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| / max |reference| (0 when both are zero)."""
    ours, reference = ours.double(), reference.double()
    scale = reference.abs().max().item()
    diff = (ours - reference).abs().max().item()
    return diff / scale if scale > 0 else diff


def abs_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return (ours.double() - reference.double()).abs().max().item()


@dataclass
class Sides:
    """Both implementations, loaded from the same files."""

    ledger: Any  # ltx_pipelines.utils.ModelLedger
    ref: dict[str, torch.nn.Module]
    ours: VideoGenerator
    checkpoint: Path
    upsampler: Path


def load_sides(directory: Path) -> Sides:
    """Build the tiny official checkpoint in `directory` and load it into both implementations."""
    checkpoint, upsampler = build_reference_checkpoint(directory)
    ledger = reference_ledger(checkpoint, upsampler)
    ref = {
        "transformer": ledger.transformer(),
        "video_encoder": ledger.video_encoder(),
        "video_decoder": ledger.video_decoder(),
        "audio_decoder": ledger.audio_decoder(),
        "vocoder": ledger.vocoder(),
        "embeddings": ledger.gemma_embeddings_processor(),
        "upsampler": ledger.spatial_upsampler(),
    }
    # No configs given: the loader derives every one from the files' metadata, as for real weights.
    modules = load_single_file(checkpoint, upsampler, dtype=torch.float32)
    components = Components(**modules, text_encoder=None, tokenizer=None, index={"max_sequence_length": TEXT_TOKENS})
    return Sides(ledger, ref, VideoGenerator(components, "cpu", torch.float32), checkpoint, upsampler)


def gemma_states(
    seed: int = 1, tokens: int = TEXT_TOKENS, pad: int = 100
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """49 fake Gemma hidden states (1, tokens, 3840) and a left-padded attention mask."""
    generator = torch.Generator().manual_seed(seed)
    states = tuple(torch.randn(1, tokens, 3840, generator=generator) * 3 for _ in range(49))
    mask = torch.ones(1, tokens, dtype=torch.int64)
    mask[:, :pad] = 0
    return states, mask


def compare_connectors(sides: Sides) -> dict[str, Pair]:
    """Feature extractor + both 1-D connectors from the same Gemma hidden states and mask."""
    states, mask = gemma_states()
    with torch.inference_mode():
        ref = sides.ref["embeddings"].process_hidden_states(states, mask, padding_side="left")
        stacked = torch.stack(states, dim=-1).flatten(2, 3)
        video, audio, _ = sides.ours.components.connectors(stacked, mask, padding_side="left")
    return {"video context": (video, ref.video_encoding), "audio context": (audio, ref.audio_encoding)}


def prompt_text(sides: Sides) -> _Text:
    """The reference's prompt contexts, installed in our prompt cache (no Gemma is run)."""
    states, mask = gemma_states()
    with torch.inference_mode():
        ref = sides.ref["embeddings"].process_hidden_states(states, mask, padding_side="left")
    text = _Text(ref.video_encoding, ref.audio_encoding, torch.ones(1, ref.video_encoding.shape[1], dtype=torch.int64))
    sides.ours._prompt_cache[PROMPT] = text
    return text


def _ref_states(sides: Sides, frames: int, height: int, width: int, fps: float, strength: float, seed: int):
    """The reference's noised video (first frame conditioned) and audio states for one stage."""
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.conditioning import VideoConditionByLatentIndex
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.utils.helpers import noise_audio_state, noise_video_state

    components = pipeline_components()
    shape = VideoPixelShape(batch=1, frames=frames, width=width, height=height, fps=fps)
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, VIDEO_LATENT, 1, height // 32, width // 32, generator=generator)
    noiser = GaussianNoiser(generator=generator)
    conditioning = [VideoConditionByLatentIndex(latent=image, strength=strength, latent_idx=0)]
    video, _ = noise_video_state(shape, noiser, conditioning, components, torch.float32, torch.device("cpu"))
    audio, _ = noise_audio_state(shape, noiser, [], components, torch.float32, torch.device("cpu"))
    return video, audio


def pipeline_components():
    """ltx-pipelines' PipelineComponents for this checkpoint's latent width (the class fixes 128)."""
    from ltx_pipelines.utils.types import PipelineComponents

    components = PipelineComponents(dtype=torch.float32, device=torch.device("cpu"))
    components.video_latent_channels = VIDEO_LATENT
    return components


def compare_transformer_pass(sides: Sides, strength: float = 0.7, sigma: float = 0.725,
                             scale_timesteps: bool = True) -> dict[str, Pair]:
    """One pass on identical tokens, a first frame conditioned at `strength` (per-token timesteps).

    `scale_timesteps=False` is the negative control: our side gets the unscaled global timestep
    for the conditioned tokens, which the comparison must catch.
    """
    from ltx_pipelines.utils.helpers import modality_from_latent_state

    text = prompt_text(sides)
    frames, height, width, fps = 17, 128, 192, 24.0
    video, audio = _ref_states(sides, frames, height, width, fps, strength, seed=3)
    s = torch.tensor(sigma)
    with torch.inference_mode():
        ref_v, ref_a = sides.ref["transformer"].velocity_model(
            modality_from_latent_state(video, text.video, s), modality_from_latent_state(audio, text.audio, s), None
        )
        latent_shape = (1 + (frames - 1) // 8, height // 32, width // 32)
        mask = video.denoise_mask[..., 0] if scale_timesteps else torch.ones_like(video.denoise_mask[..., 0])
        ours_v, ours_a = sides.ours.velocity(video.latent, audio.latent, text, s, mask, latent_shape, fps)
    return {"video velocity": (ours_v, ref_v), "audio velocity": (ours_a, ref_a)}


def start_image_png(width: int = 300, height: int = 200, seed: int = 5, flip: bool = False) -> bytes:
    """A smooth test picture (gradients and a disc), PNG-encoded; `flip` mirrors the gradients (a keyframe)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    if flip:
        x, y = width - 1 - x, height - 1 - y
    picture = np.stack([x * 255 / width, y * 255 / height, 128 + 100 * np.sin(x / 17.0 + y / 23.0)], axis=-1)
    picture[(x - width * 0.6) ** 2 + (y - height * 0.4) ** 2 < (height / 4) ** 2] = rng.integers(0, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(picture.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def compare_start_image(sides: Sides, path: Path, width: int = 192, height: int = 128) -> dict[str, Pair]:
    """The conditioning pixels (after the CRF-33 round trip and the cover-crop) and their latent."""
    from ltx_pipelines.utils.media_io import load_image_conditioning

    ref = load_image_conditioning(str(path), height, width, torch.float32, torch.device("cpu"))
    frame = prepare_start_frame(Image.open(path).convert("RGB"))
    ours = condition_pixels(frame, width, height)
    with torch.inference_mode():
        ref_latent = sides.ref["video_encoder"](ref)
        ours_latent = sides.ours.encode_image(frame, width, height)
    return {"start image pixels": (ours, ref), "start image latent": (ours_latent, ref_latent)}


def latent(shape: tuple[int, ...], seed: int = 7) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def compare_vae(sides: Sides) -> dict[str, Pair]:
    """Video VAE encode of a clip and decode of a latent (one tile, no tiling)."""
    pixels = torch.rand((1, 3, 17, 128, 192), generator=torch.Generator().manual_seed(8)) * 2 - 1
    z = latent((1, VIDEO_LATENT, 3, 4, 6))
    vae = sides.ours.components.vae
    with torch.inference_mode():
        ref_enc = sides.ref["video_encoder"](pixels)
        ours_enc = sides.ours._normalize(vae.encode(pixels).latent_dist.mode())
        ref_dec = sides.ref["video_decoder"](z)
        ours_dec = vae.decode(sides.ours._denormalize(z), return_dict=False)[0]
    return {"video VAE encode": (ours_enc, ref_enc), "video VAE decode": (ours_dec, ref_dec)}


def compare_upsampler(sides: Sides) -> dict[str, Pair]:
    """The x2 latent upsampler between the VAE statistics, as the reference applies it."""
    from ltx_core.model.upsampler import upsample_video

    z = latent((1, VIDEO_LATENT, 3, 3, 4), seed=9)
    c = sides.ours.components
    with torch.inference_mode():
        ref = upsample_video(z, sides.ref["video_encoder"], sides.ref["upsampler"])
        ours = sides.ours._normalize(c.latent_upsampler(sides.ours._denormalize(z)))
    return {"latent upsampler": (ours, ref)}


def audio_tokens(latent_frames: int = 26) -> torch.Tensor:
    """Normalized audio tokens (1, L, 128)."""
    return latent((1, latent_frames, 128), seed=10)


def loud_mel(frames: int = 101) -> torch.Tensor:
    """A stereo log-mel input (1, 2, frames, 64) loud enough that the 16 kHz stage passes +-1."""
    return latent((1, 2, frames, 64), seed=11) * 5


def compare_audio(sides: Sides, latent_frames: int = 26) -> dict[str, Pair]:
    """Audio VAE decode (normalized tokens -> mel) and vocoder + bandwidth extension (mel -> 48 kHz)."""
    from ltx_core.components.patchifiers import AudioPatchifier

    tokens = audio_tokens(latent_frames)
    c = sides.ours.components
    with torch.inference_mode():
        ref_latent = AudioPatchifier(patch_size=1).unpatchify(tokens, _audio_shape(latent_frames))
        ref_mel = sides.ref["audio_decoder"](ref_latent)
        mean, std = sides.ours._audio_stats()
        ours_mel = c.audio_vae.decode(unpack_audio(tokens * std + mean, 16), return_dict=False)[0]
        mel = loud_mel()
        ref_wave, ours_wave = sides.ref["vocoder"](mel), c.vocoder(mel)
    return {"audio VAE decode": (ours_mel, ref_mel), "vocoder + BWE (48 kHz)": (ours_wave, ref_wave)}


def _variant(module: torch.nn.Module, name: str, overrides: dict[str, Any]) -> torch.nn.Module:
    """`module` rebuilt with config `overrides` and the same weights (for negative controls)."""
    from pipeline.weights.registry import COMPONENT_CLASSES

    variant = COMPONENT_CLASSES[name](**{**module.config, **overrides}).eval()
    variant.load_state_dict(module.state_dict())
    return variant


def compare_vocoder_variant(sides: Sides, **overrides: Any) -> Pair:
    """Our vocoder with config `overrides` vs the reference, on the same mel."""
    variant = _variant(sides.ours.components.vocoder, "vocoder", overrides)
    with torch.inference_mode():
        return variant(loud_mel()), sides.ref["vocoder"](loud_mel())


def compare_vae_variant(sides: Sides, **overrides: Any) -> Pair:
    """Our video decoder with config `overrides` vs the reference, on the same latent."""
    variant = _variant(sides.ours.components.vae, "vae", overrides)
    z = latent((1, VIDEO_LATENT, 3, 4, 6))
    with torch.inference_mode():
        return variant.decode(sides.ours._denormalize(z), return_dict=False)[0], sides.ref["video_decoder"](z)


def _audio_shape(frames: int):
    from ltx_core.types import AudioLatentShape

    return AudioLatentShape(batch=1, channels=8, frames=frames, mel_bins=16)


TILED_CASES = {  # latent shapes for the tiled-decode comparison
    # one tile: 17 frames of 128x192
    "one tile": (1, 8, 3, 4, 6),
    # tiled only in time: 129 frames (3 temporal groups) of 128x192
    "time only": (1, 8, 17, 4, 6),
    # tiled in time and space: 73 frames (2 groups) of 128x608; 2 x 2 tiles of 3 x 16 cells, so the
    # corners blend four tiles. Smaller than the 640x768 x 129 example, which takes ~20 s
    # per decode on 2 cores (measured bit-equal too).
    "time and space": (1, 8, 10, 4, 19),
}


class _Replay:
    """Stands in for the reference's decoder inside `decode_video`: replays chunks already decoded."""

    def __init__(self, chunks: list[torch.Tensor]):
        self.chunks = chunks

    def tiled_decode(self, *args, **kwargs):
        return iter(self.chunks)


def reference_decode(sides: Sides, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float pixels (1, 3, F, H, W), uint8 frames (F, H, W, 3)) as ltx-core decodes `z`.

    The uint8 frames are `decode_video`'s own conversion of the same chunks (decoded once).
    """
    from ltx_core.model.video_vae import TilingConfig, decode_video

    chunks = list(sides.ref["video_decoder"].tiled_decode(z, TilingConfig.default()))
    frames = torch.cat(list(decode_video(z, _Replay(chunks), TilingConfig.default(), None)))
    return torch.cat(chunks, dim=2), frames


def our_decode(sides: Sides, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """(float pixels, uint8 frames from the runtime's `_video_frames`, its decode progress reports)."""
    vae = sides.ours.components.vae
    pixels = torch.cat(list(tiled_decode(lambda x: vae.decode(x, return_dict=False)[0], sides.ours._denormalize(z))),
                       dim=2)
    frames_count = pixel_frames(z.shape[2])
    geometry = Geometry(z.shape[4] * 32, z.shape[3] * 32, frames_count, frames_count, Fraction(24))
    reports: list[tuple[int, int]] = []
    tracker = _Tracker(lambda p: reports.append((p.step, p.total)) if p.stage == "decode" else None, None)
    frames = np.concatenate(list(sides.ours._video_frames(z, geometry, tracker)))
    return pixels, torch.from_numpy(frames), reports


def compare_tiled_decode(sides: Sides) -> dict[str, Pair]:
    """The reference's tiled decode (`TilingConfig.default()`) vs ours, float pixels and uint8 frames."""
    pairs: dict[str, Pair] = {}
    for case, shape in TILED_CASES.items():
        z = latent(shape, seed=11)
        with torch.inference_mode():
            ref_pixels, ref_frames = reference_decode(sides, z)
            ours_pixels, ours_frames, _ = our_decode(sides, z)
        frames = pixel_frames(shape[2])
        pairs[f"tiled decode, {case} ({frames}x{shape[3] * 32}x{shape[4] * 32}): pixels"] = (ours_pixels, ref_pixels)
        pairs[f"tiled decode, {case}: uint8 frames"] = (ours_frames.float(), ref_frames.float())
    return pairs


@dataclass
class JobResult:
    stage1_video: torch.Tensor
    stage1_audio: torch.Tensor
    video: torch.Tensor
    audio: torch.Tensor
    frames: torch.Tensor  # uint8 (F, H, W, 3)
    waveform: torch.Tensor


JOB = dict(width=256, height=192, num_frames=17, fps=24.0, seed=42)


KeyframeSpec = tuple[Path, int, float]  # (image file, frame index, strength)


def reference_job(sides: Sides, image_path: Path, strength: float, text: _Text,
                  keyframes: tuple[KeyframeSpec, ...] = ()) -> JobResult:
    """ltx-pipelines' DistilledPipeline.__call__, step for step, in float32 (its own code is fixed at bf16).

    Only the prompt encoding is replaced by the given contexts (no Gemma here).
    """
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.model.audio_vae import decode_audio
    from ltx_core.model.upsampler import upsample_video
    from ltx_core.model.video_vae import TilingConfig, decode_video
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.utils import euler_denoising_loop
    from ltx_pipelines.utils.args import ImageConditioningInput
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
    from ltx_pipelines.utils.helpers import combined_image_conditionings, denoise_audio_video, simple_denoising_func

    dtype, device = torch.float32, torch.device("cpu")
    w, h, frames, fps, seed = JOB["width"], JOB["height"], JOB["num_frames"], JOB["fps"], JOB["seed"]
    images = [ImageConditioningInput(str(image_path), 0, strength)]
    images += [ImageConditioningInput(str(path), index, weight) for path, index, weight in keyframes]
    generator = torch.Generator(device=device).manual_seed(seed)
    noiser, stepper = GaussianNoiser(generator=generator), EulerDiffusionStep()
    components = pipeline_components()
    encoder, transformer = sides.ref["video_encoder"], sides.ref["transformer"]

    def loop(sigmas, video_state, audio_state, stepper):
        return euler_denoising_loop(sigmas=sigmas, video_state=video_state, audio_state=audio_state, stepper=stepper,
                                    denoise_fn=simple_denoising_func(text.video, text.audio, transformer))

    with torch.inference_mode():
        shape1 = VideoPixelShape(batch=1, frames=frames, width=w // 2, height=h // 2, fps=fps)
        cond1 = combined_image_conditionings(images, shape1.height, shape1.width, encoder, dtype, device)
        sigmas1 = torch.Tensor(DISTILLED_SIGMA_VALUES).to(device)
        video1, audio1 = denoise_audio_video(shape1, cond1, noiser, sigmas1, stepper, loop, components, dtype, device)
        upscaled = upsample_video(video1.latent[:1], encoder, sides.ref["upsampler"])
        sigmas2 = torch.Tensor(STAGE_2_DISTILLED_SIGMA_VALUES).to(device)
        shape2 = VideoPixelShape(batch=1, frames=frames, width=w, height=h, fps=fps)
        cond2 = combined_image_conditionings(images, h, w, encoder, dtype, device)
        video2, audio2 = denoise_audio_video(
            shape2, cond2, noiser, sigmas2, stepper, loop, components, dtype, device,
            noise_scale=sigmas2[0], initial_video_latent=upscaled, initial_audio_latent=audio1.latent,
        )
        chunks = decode_video(video2.latent, sides.ref["video_decoder"], TilingConfig.default(), generator)
        decoded = torch.cat(list(chunks))
        audio = decode_audio(audio2.latent, sides.ref["audio_decoder"], sides.ref["vocoder"])
    return JobResult(video1.latent, audio1.latent, video2.latent, audio2.latent, decoded, audio.waveform)


def our_job(sides: Sides, image_path: Path, strength: float, keyframes: tuple[KeyframeSpec, ...] = (),
            loras: tuple[tuple[str, float], ...] = ()) -> JobResult:
    """Our VideoGenerator on the same request (explicit size, seed), decoded as it writes the MP4."""
    from pipeline.geometry import OUTPUT_SAMPLE_RATE

    prompt_text(sides)
    request = GenerationParams(prompt=PROMPT, num_frames=JOB["num_frames"],
                           resolution=f"{JOB['width']}x{JOB['height']}", frames_per_second=JOB["fps"],
                           image_strength=strength, seed=JOB["seed"],
                           keyframes=[{"frame_index": index, "strength": weight} for _, index, weight in keyframes],
                           loras=[{"name": name, "scale": scale} for name, scale in loras])
    gen = sides.ours
    with torch.inference_mode():
        result = gen.denoise(request, image_path.read_bytes(), JOB["seed"],
                             keyframe_images=[path.read_bytes() for path, _, _ in keyframes])
        frames = np.concatenate(list(gen._video_frames(result.video, result.geometry, _Tracker(None, None))))
        samples = result.geometry.audio_samples(OUTPUT_SAMPLE_RATE)
        waveform = gen._decode_audio(result.audio, samples)
    mel = gen.components.audio_vae.config.mel_bins // gen.components.audio_vae.mel_compression_ratio
    return JobResult(
        result.stage1_video, unpack_audio(result.stage1_audio, mel),
        result.video, unpack_audio(result.audio, mel), torch.from_numpy(frames), torch.from_numpy(waveform),
    )


def compare_job(sides: Sides, image_path: Path, strength: float, keyframes: tuple[KeyframeSpec, ...] = (),
                tag: str | None = None, loras: tuple[tuple[str, float], ...] = ()) -> dict[str, Pair]:
    """The whole distilled two-stage job: stage-1 and final latents, decoded frames, waveform.

    `keyframes` adds the reference's `images` triples beyond frame 0 (an end frame, a middle one).
    """
    text = prompt_text(sides)
    ref = reference_job(sides, image_path, strength, text, keyframes)
    ours = our_job(sides, image_path, strength, keyframes, loras)
    samples = min(ours.waveform.shape[-1], ref.waveform.shape[-1])
    tag = tag or f"job s={strength}"
    from ltx_core.model.video_vae import TilingConfig, decode_video

    with torch.inference_mode():  # the reference's decode of *our* final latent: isolates the decode
        ref_on_ours = torch.cat(list(decode_video(ours.video, sides.ref["video_decoder"], TilingConfig.default())))
    return {
        f"{tag}: stage-1 video latent": (ours.stage1_video, ref.stage1_video),
        f"{tag}: stage-1 audio latent": (ours.stage1_audio, ref.stage1_audio),
        f"{tag}: final video latent": (ours.video, ref.video),
        f"{tag}: final audio latent": (ours.audio, ref.audio),
        f"{tag}: decoded frames (uint8)": (ours.frames.float(), ref.frames.float()),
        f"{tag}: frames, reference decode of our latent (uint8)": (ours.frames.float(), ref_on_ours.float()),
        f"{tag}: waveform": (ours.waveform[..., :samples], ref.waveform[..., :samples]),
    }



def lora_sides(sides: Sides, directory: Path, loras: list[tuple[str, float]]) -> Sides:
    """`sides` with ltx-core's LoRA-fused transformer as the reference and our adapters pointed at `directory`.

    Ours still has its base weights; a job (or `sides.ours.adapters.use`) naming the LoRAs applies them.
    """
    import dataclasses

    from ltx_reference import reference_lora_transformer

    fused = reference_lora_transformer(sides.checkpoint, sides.upsampler,
                                       [(directory / f"{name}.safetensors", scale) for name, scale in loras])
    sides.ours.adapters.directory = directory
    return dataclasses.replace(sides, ref={**sides.ref, "transformer": fused})


def compare_lora_pass(sides: Sides, directory: Path, loras: list[tuple[str, float]]) -> dict[str, Pair]:
    """One transformer pass with LoRAs: ltx-core's fused weights vs our adapter hooks on the base weights."""
    with_lora = lora_sides(sides, directory, loras)
    sides.ours.adapters.use(loras)
    try:
        pairs = compare_transformer_pass(with_lora, strength=0.7)
    finally:
        sides.ours.adapters.use([])
    return {f"LoRA pass: {name}": pair for name, pair in pairs.items()}
