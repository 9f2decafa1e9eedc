"""The model runtime: LTX-2.3 distilled two-stage image-to-video with joint audio, to an MP4.

`VideoGenerator` is what the door (`pipeline.engine.Engine`) drives: a request and a start image in,
progress callbacks and a cancel check during the run, an MP4 path out. Its models are loaded
once and stay resident between jobs.

The workflow is the reference DistilledPipeline's: stage 1 at half size (8 Euler steps on
the distilled sigmas), the x2 latent upsampler, stage 2 at full size re-noised to 0.909375
(3 steps); both stages are conditioned on the start image with `image_strength`; video and
audio are denoised jointly; one transformer pass per step (no guidance of any kind), so
exactly 11 passes per job.
"""

from __future__ import annotations

import gc
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.errors import Cancelled
from pipeline.generation.adapters import LoraAdapters
from pipeline.generation.conditioning import CONDITIONING_CRF, condition_pixels, prepare_start_frame
from pipeline.generation.decode import (
    REFERENCE_TILING,
    DecodeTiling,
    decode_groups,
    tiled_decode,
    to_uint8_frames,
)
from pipeline.generation.enhance import MAX_NEW_TOKENS, Enhanced, enhance_prompt
from pipeline.generation.image import decode_start_image
from pipeline.generation.mp4 import write_mp4
from pipeline.generation.outcome import CancelCheck, Progress, ProgressCallback, Result
from pipeline.generation.schedule import (
    STAGE1_SIGMAS,
    STAGE2_SIGMAS,
    TIMESTEP_SCALE,
    conditioned_x0,
    euler_step,
    first_frame_mask,
    noised_state,
    pack_video,
    sigma_tensor,
    unpack_audio,
    unpack_video,
)
from pipeline.geometry import OUTPUT_SAMPLE_RATE, VAE_TEMPORAL, Geometry, plan_geometry
from pipeline.params import SEED_RANGE, GenerationParams
from pipeline.placement import plan as memory_plan
from pipeline.placement.apply import Execution, apply_plan, choose, placer
from pipeline.weights.loader import Components, load_components
from pipeline.weights.lock import require_verified


@dataclass
class _Tracker:
    on_progress: ProgressCallback | None
    should_cancel: CancelCheck | None
    stage: str = "prepare"  # the phase the job is in (named in an out-of-memory message)
    notes: list[str] = field(default_factory=list)  # facts the job's record should carry (a truncated prompt)

    # Share of the whole job per phase; the denoising passes dominate on a GPU.
    WEIGHTS = {"prepare": 0.05, "stage1": 0.5, "upsample": 0.02, "stage2": 0.23, "decode": 0.2}
    ORDER = ("prepare", "stage1", "upsample", "stage2", "decode")

    def check(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("cancelled")

    def report(self, stage: str, step: int, total: int) -> None:
        self.stage = stage
        if self.on_progress is None:
            return
        done = sum(self.WEIGHTS[name] for name in self.ORDER[: self.ORDER.index(stage)])
        fraction = min(1.0, done + self.WEIGHTS[stage] * step / max(total, 1))
        self.on_progress(Progress(stage, step, total, round(fraction, 4)))


@dataclass
class Denoised:
    """The denoised latents of a job, before decoding."""

    video: torch.Tensor  # (1, C, F, H/32, W/32), normalized
    audio: torch.Tensor  # (1, L, C*M) tokens, normalized
    image_latent: torch.Tensor  # the stage-2 conditioning latent of the start image (1, C, 1, h, w)
    geometry: Geometry
    stage1_video: torch.Tensor | None = None  # (1, C, F, H/64, W/64), normalized, before the upsampler
    stage1_audio: torch.Tensor | None = None
    keyframe_tokens: torch.Tensor | None = None  # stage 2's appended keyframe tokens after the last step


@dataclass
class _Text:
    video: torch.Tensor
    audio: torch.Tensor
    mask: torch.Tensor
    tokens: int = 0  # the prompt's length in tokens before truncation to max_sequence_length


class VideoGenerator:
    """LTX-2.3 resident in memory, generating one job at a time."""

    def __init__(
        self,
        components: Components,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        prompt_cache_size: int = 8,
        decode_tiling: DecodeTiling | None = REFERENCE_TILING,
        encoder_threads: int = 0,
        lora_dir: Path | None = None,
        enhance_max_tokens: int = MAX_NEW_TOKENS,
    ):
        self.components = components
        self.device = torch.device(device)
        self.dtype = dtype
        self.decode_tiling = decode_tiling  # None: the whole clip in one decoder call
        self.encoder_threads = encoder_threads
        self.max_sequence_length = int(components.index.get("max_sequence_length", 1024))
        self.transformer_passes = 0
        self.text_encoder_calls = 0
        self.execution: Execution | None = None  # the GPU memory plan, when one applies
        self._prompt_cache: OrderedDict[str, _Text] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self.active: _Tracker | None = None  # the job in progress (or the last one)
        components.transformer.register_forward_pre_hook(self._count_pass)
        # LoRA adapters as hooks on the transformer's linear layers (see generation/adapters.py).
        self.adapters = LoraAdapters(components.transformer, lora_dir, self.device, dtype)
        self.enhance_max_tokens = enhance_max_tokens  # bound on a prompt rewrite (`enhance_prompt`)
        self.enhanced: Enhanced | None = None  # the last job's prompt enhancement, when it asked for one

    @classmethod
    def from_directory(
        cls,
        weights_dir: Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        plan: str | None = None,
        compile_blocks: bool = False,
        **options,
    ) -> VideoGenerator:
        """Load a weights directory (real or tiny) and keep it resident.

        Files are checked against the directory's lock first (size + sha256, cached). On a GPU
        the memory plan (`plan`, or the one chosen for the card's memory) places the modules;
        `compile_blocks` compiles the transformer's repeated blocks once.
        """
        device = torch.device(device)
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        require_verified(weights_dir)
        if device.type != "cuda":
            return cls(load_components(weights_dir, device, dtype), device, dtype, **options)
        plan_name, _ = choose(device, plan)
        actions: list[str] = []
        components = load_components(weights_dir, device, dtype, place=placer(plan_name, device, actions))
        generator = cls(components, device, dtype, **options)
        generator.execution = apply_plan(components, plan_name, device, compile_blocks, already_placed=True,
                                         actions=actions)
        return generator

    def _count_pass(self, module: torch.nn.Module, args: tuple) -> None:
        self.transformer_passes += 1

    @property
    def is_smoke_test(self) -> bool:
        return self.components.is_smoke_test

    # ---- conditioning ---------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> _Text:
        """Gemma 3 hidden states -> the text connectors, cached per prompt (LRU)."""
        prompt = prompt.strip()
        cached = self._prompt_cache.get(prompt)
        if cached is not None:
            self._prompt_cache.move_to_end(prompt)
            return cached
        c = self.components
        tokens = c.tokenizer(
            [prompt], padding="max_length", max_length=self.max_sequence_length, truncation=True,
            add_special_tokens=True, return_tensors="pt",
        )
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        self.text_encoder_calls += 1
        hidden = c.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        stacked = torch.stack(hidden, dim=-1).flatten(2, 3).to(self.dtype)
        video, audio, text_mask = c.connectors(stacked, mask, padding_side="left")
        # The encoder reads at most max_sequence_length tokens; count the whole prompt so a job
        # whose prompt was cut can say so (the API caps characters, not tokens).
        counted = len(c.tokenizer(prompt, add_special_tokens=True, truncation=False).input_ids)
        text = _Text(video, audio, text_mask, counted)
        if self._prompt_cache_size > 0:
            self._prompt_cache[prompt] = text
            while len(self._prompt_cache) > self._prompt_cache_size:
                self._prompt_cache.popitem(last=False)
        return text

    def encode_image(self, frame: np.ndarray, width: int, height: int) -> torch.Tensor:
        """The start frame's normalized VAE latent (1, C, 1, h, w) at one stage's size."""
        pixels = condition_pixels(frame, width, height).to(self.device, self.dtype)
        vae = self.components.vae
        latent = vae.encode(pixels).latent_dist.mode().float()
        return self._normalize(latent)

    def _normalize(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.components.vae
        mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
        std = vae.latents_std.view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
        return (latents - mean) * vae.config.scaling_factor / std

    def _denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.components.vae
        mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
        std = vae.latents_std.view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
        return latents * std / vae.config.scaling_factor + mean

    def _audio_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        audio_vae = self.components.audio_vae
        return audio_vae.latents_mean.to(self.device, torch.float32), audio_vae.latents_std.to(
            self.device, torch.float32
        )

    # ---- denoising ------------------------------------------------------------------------

    def _coords(self, latent_shape: tuple[int, int, int], audio_frames: int, fps: float,
                keyframe_indices: tuple[int, ...] = ()):
        """RoPE positions of the video and audio tokens, in the pipeline dtype as the reference keeps them.

        ltx-pipelines stores positions in its latent state's dtype (bfloat16 on a GPU), so the
        transformer sees time positions rounded to bfloat16; rounding here and widening again
        gives the transformer those exact values (bfloat16 -> float32 is exact). Keyframe tokens
        follow, one latent frame each, at the positions `VideoConditionByKeyframeIndex` gives them.
        """
        rope, audio_rope = self.components.transformer.rope, self.components.transformer.audio_rope
        video = rope.prepare_video_coords(1, *latent_shape, self.device, fps=fps)
        audio = audio_rope.prepare_audio_coords(1, audio_frames, self.device)
        video = video.to(self.dtype).to(video.dtype)
        if keyframe_indices:
            video = torch.cat([video, *(self._keyframe_coords(latent_shape, index, fps) for index in keyframe_indices)],
                              dim=2)
        return video, audio.to(self.dtype).to(audio.dtype)

    def _keyframe_coords(self, latent_shape: tuple[int, int, int], frame_index: int, fps: float) -> torch.Tensor:
        """Positions of one keyframe's tokens (1, 3, h*w, 2), as ltx-core's `VideoConditionByKeyframeIndex`.

        A one-frame latent spans pixel frames [0, 8) with no causal shift, moved to start at
        `frame_index`; the reference keeps these in float32 (not the state's dtype), so no rounding.
        """
        _, height, width = latent_shape
        coords = self.components.transformer.rope.prepare_video_coords(1, 1, height, width, self.device, fps=fps)
        temporal = torch.tensor([frame_index, frame_index + VAE_TEMPORAL], dtype=torch.float32, device=self.device)
        coords[:, 0] = (temporal / fps).expand_as(coords[:, 0])
        return coords

    def velocity(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        text: _Text,
        sigma: torch.Tensor,
        token_mask: torch.Tensor,
        latent_shape: tuple[int, int, int],
        fps: float,
        coords: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One transformer pass: video and audio velocities for tokens at noise level `sigma`.

        Conditioned tokens get the per-token timestep sigma * mask (0 for a frame kept exactly).
        """
        frames, height, width = latent_shape
        video_coords, audio_coords = coords or self._coords(latent_shape, audio.shape[1], fps)
        t = (sigma * TIMESTEP_SCALE).reshape(1)
        video_velocity, audio_velocity = self.components.transformer(
            hidden_states=video.to(self.dtype),
            audio_hidden_states=audio.to(self.dtype),
            encoder_hidden_states=text.video,
            audio_encoder_hidden_states=text.audio,
            timestep=t.unsqueeze(-1) * token_mask,
            audio_timestep=t,
            sigma=t,  # LTX-2.3 prompt modulation
            encoder_attention_mask=text.mask,
            audio_encoder_attention_mask=text.mask,
            num_frames=frames,
            height=height,
            width=width,
            fps=fps,
            audio_num_frames=audio.shape[1],
            video_coords=video_coords,
            audio_coords=audio_coords,
            use_cross_timestep=True,
            return_dict=False,
        )
        return video_velocity.float(), audio_velocity.float()

    def _denoise(
        self,
        stage: str,
        sigmas: tuple[float, ...],
        video: torch.Tensor,
        video_clean: torch.Tensor,
        token_mask: torch.Tensor,
        audio: torch.Tensor,
        text: _Text,
        latent_shape: tuple[int, int, int],
        geometry: Geometry,
        tracker: _Tracker,
        keyframe_indices: tuple[int, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tracker.stage = stage  # an out-of-memory error in its first pass is named after this stage
        fps = float(geometry.fps)
        coords = self._coords(latent_shape, audio.shape[1], fps, keyframe_indices)
        sigma = sigma_tensor(sigmas).to(self.device)
        steps = len(sigmas) - 1
        for i in range(steps):
            tracker.check()
            video_velocity, audio_velocity = self.velocity(video, audio, text, sigma[i], token_mask, latent_shape,
                                                           fps, coords)
            video_x0 = conditioned_x0(video, video_velocity, sigma[i], token_mask, video_clean)
            audio_x0 = audio - audio_velocity * sigma[i]
            video = euler_step(video, video_x0, sigma[i], sigma[i + 1])
            audio = euler_step(audio, audio_x0, sigma[i], sigma[i + 1])
            tracker.report(stage, i + 1, steps)
        return video, audio

    # ---- decoding -------------------------------------------------------------------------

    def _decode_audio(self, audio_tokens: torch.Tensor, samples: int) -> np.ndarray:
        """Audio tokens -> (2, samples) float32 at 48 kHz, padded or trimmed to the video's duration."""
        c = self.components
        mean, std = self._audio_stats()
        tokens = audio_tokens * std + mean
        mel_bins = c.audio_vae.config.mel_bins // c.audio_vae.mel_compression_ratio
        latents = unpack_audio(tokens, mel_bins).to(self.dtype)
        mel = c.audio_vae.decode(latents, return_dict=False)[0]
        waveform = c.vocoder(mel)[0].float().cpu().numpy()
        # The causal audio decoder yields 4L-3 mel frames: 30-50 ms short of the video. Pad with
        # silence (or trim) to exactly the delivered duration.
        fitted = np.zeros((waveform.shape[0], samples), dtype=np.float32)
        keep = min(samples, waveform.shape[1])
        fitted[:, :keep] = waveform[:, :keep]
        return fitted

    def _video_frames(self, latents: torch.Tensor, geometry: Geometry, tracker: _Tracker):
        """Normalized video latents -> uint8 frame chunks, one per temporal group of the reference's tiling."""
        tracker.stage = "decode"
        vae = self.components.vae
        latents = self._denormalize(latents).to(self.dtype)
        remaining = geometry.num_frames
        total = decode_groups(*latents.shape[2:], self.decode_tiling)
        chunks = tiled_decode(lambda z: vae.decode(z, return_dict=False)[0], latents, self.decode_tiling)
        for index, chunk in enumerate(chunks):
            tracker.check()
            frames = to_uint8_frames(chunk)[:remaining]
            remaining -= len(frames)
            tracker.report("decode", index + 1, total)
            if len(frames):
                yield frames

    # ---- the job --------------------------------------------------------------------------

    def denoise(
        self,
        request: GenerationParams,
        image: bytes | Image.Image,
        seed: int,
        tracker: _Tracker | None = None,
        image_crf: int | None = CONDITIONING_CRF,
        timings: dict[str, float] | None = None,
        keyframe_images: Sequence[bytes | Image.Image] = (),
    ) -> Denoised:
        """Both stages of the distilled workflow: the final (normalized) video and audio latents.

        `keyframe_images` go with `request.keyframes`, in order. As ltx-pipelines' `images`: the
        start image replaces latent frame 0; each keyframe's latent is appended as extra tokens
        at its frame's position, in stage 1 and again (at full size) in stage 2, and the appended
        tokens are dropped after each stage's last step (`clear_conditioning`), before upsampling
        and decoding.
        """
        tracker = tracker or _Tracker(None, None)
        timings = timings if timings is not None else {}
        clock = time.perf_counter()
        if len(keyframe_images) != len(request.keyframes):
            raise ValueError(f"{len(request.keyframes)} keyframes but {len(keyframe_images)} keyframe images")
        geometry, text, image1, image2 = self._prepare(request, image, tracker, image_crf, seed)
        keys1, keys2 = self._keyframe_latents(request, keyframe_images, geometry, image_crf)
        indices = tuple(keyframe.frame_index for keyframe in request.keyframes)
        timings["prepare"] = time.perf_counter() - clock
        tracker.report("prepare", 1, 1)

        # Noise comes from one CPU generator, drawn in a fixed order and shape (video tokens, then
        # audio; as diffusers' LTX2ConditionPipeline draws it), so a seed gives the same job on any device.
        generator = torch.Generator("cpu").manual_seed(seed)
        randn = lambda shape: torch.randn(shape, generator=generator).to(self.device)  # noqa: E731
        strength = request.image_strength

        # Stage 1: half size, from pure noise.
        clock = time.perf_counter()
        f, h1, w1 = geometry.latent_shape(1)
        clean, mask = self._conditioned(torch.zeros(1, self._channels, f, h1, w1, device=self.device), image1,
                                        strength, keys1, request)
        video = noised_state(clean, randn(tuple(clean.shape)), mask.unsqueeze(-1) * STAGE1_SIGMAS[0])
        audio = randn((1, geometry.audio_latent_frames, self._audio_width))  # token shape, as the reference
        video, audio = self._denoise(
            "stage1", STAGE1_SIGMAS, video, clean, mask, audio, text, (f, h1, w1), geometry, tracker, indices
        )
        timings["stage1"] = time.perf_counter() - clock
        stage1_video, stage1_audio = unpack_video(video[:, : f * h1 * w1], f, h1, w1), audio

        clock = time.perf_counter()
        upsampled = self._upsample(stage1_video, tracker)
        timings["upsample"] = time.perf_counter() - clock

        # Stage 2: full size, re-noised to the first stage-2 sigma, image conditioned again.
        clock = time.perf_counter()
        f, h2, w2 = geometry.latent_shape(2)
        clean, mask = self._conditioned(upsampled, image2, strength, keys2, request)
        video = noised_state(clean, randn(tuple(clean.shape)), mask.unsqueeze(-1) * STAGE2_SIGMAS[0])
        audio = noised_state(audio, randn(tuple(audio.shape)), STAGE2_SIGMAS[0])
        video, audio = self._denoise(
            "stage2", STAGE2_SIGMAS, video, clean, mask, audio, text, (f, h2, w2), geometry, tracker, indices
        )
        timings["stage2"] = time.perf_counter() - clock
        final = unpack_video(video[:, : f * h2 * w2], f, h2, w2)
        return Denoised(final, audio, image2, geometry, stage1_video, stage1_audio, video[:, f * h2 * w2:])

    def _prepare(
        self, request: GenerationParams, image: bytes | Image.Image, tracker: _Tracker, image_crf: int | None,
        seed: int = 0,
    ) -> tuple[Geometry, _Text, torch.Tensor, torch.Tensor]:
        """The job's geometry (refused here if it cannot fit), its prompt and the start image's latents per stage."""
        tracker.check()
        self.enhanced = None
        tracker.report("prepare", 0, 1)
        start = decode_start_image(image) if isinstance(image, bytes) else image.convert("RGB")
        geometry = plan_geometry(request, start.width, start.height)
        choices = [(choice.name, choice.scale) for choice in request.loras]
        if self.execution is not None:  # refuse what cannot fit before any work; tile the VAE when large
            self._check_fits(geometry, choices)
            self.execution.prepare_decode(self.components.vae, geometry.width, geometry.height)
        self.adapters.use(choices)  # the same set as the last job: nothing to do
        prompt = request.prompt
        if request.enhance_prompt:
            # The reference shows Gemma the start image as decoded (no H.264 round trip).
            self.enhanced = enhance_prompt(self.components.text_encoder, self.components.tokenizer, prompt,
                                           np.asarray(start, dtype=np.uint8), seed, self.enhance_max_tokens,
                                           should_stop=tracker.should_cancel, device=self.device)
            tracker.check()
            prompt = self.enhanced.prompt
        text = self.encode_prompt(prompt)
        if text.tokens > self.max_sequence_length:
            tracker.notes.append(f"The prompt is {text.tokens} tokens long; the text encoder read only its first "
                                 f"{self.max_sequence_length}.")
        frame = prepare_start_frame(start, image_crf)
        image1 = self.encode_image(frame, *geometry.stage1_size)
        image2 = self.encode_image(frame, geometry.width, geometry.height)
        return geometry, text, image1, image2

    def _check_fits(self, geometry: Geometry, choices: list[tuple[str, float]]) -> None:
        """The plan's check, with the GPU memory the job's LoRA matrices take counted against the card."""
        execution = self.execution
        adapter_bytes = sum(f.device_bytes(self.dtype.itemsize) for f in self.adapters.files(choices)) if choices \
            else 0
        if execution is None or execution.vram_bytes is None or not adapter_bytes:
            if execution is not None:
                execution.check(geometry)
            return
        memory_plan.check_request(execution.plan, geometry, execution.vram_bytes - adapter_bytes)

    @property
    def _channels(self) -> int:
        return self.components.transformer.config.in_channels

    @property
    def _audio_width(self) -> int:
        """Channels of one audio token: latent channels x the audio latent's mel bins."""
        audio_vae = self.components.audio_vae
        return audio_vae.config.latent_channels * (audio_vae.config.mel_bins // audio_vae.mel_compression_ratio)

    def _keyframe_latents(
        self, request: GenerationParams, images: Sequence[bytes | Image.Image], geometry: Geometry,
        image_crf: int | None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each keyframe image's latent at stage 1's and stage 2's size (the start image's treatment)."""
        stage1, stage2 = [], []
        for image in images:
            decoded = decode_start_image(image) if isinstance(image, bytes) else image.convert("RGB")
            frame = prepare_start_frame(decoded, image_crf)
            stage1.append(self.encode_image(frame, *geometry.stage1_size))
            stage2.append(self.encode_image(frame, geometry.width, geometry.height))
        return stage1, stage2

    def _conditioned(
        self, latents: torch.Tensor, image_latent: torch.Tensor, strength: float,
        keyframe_latents: Sequence[torch.Tensor] = (), request: GenerationParams | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean tokens, per-token denoise mask) of one stage.

        The start image replaces latent frame 0 (`VideoConditionByLatentIndex`); each keyframe's
        tokens are appended after the video's, their mask 1 - strength (`VideoConditionByKeyframeIndex`).
        """
        frames, height, width = latents.shape[2:]
        latents[:, :, :1] = image_latent
        mask = first_frame_mask(frames, height, width, strength).to(self.device)
        tokens = [pack_video(latents)]
        masks = [mask]
        keyframes = request.keyframes if request is not None else []
        for keyframe, keyframe_latent in zip(keyframes, keyframe_latents, strict=True):
            appended = pack_video(keyframe_latent)
            tokens.append(appended)
            masks.append(torch.full(appended.shape[:2], 1.0 - keyframe.strength, device=self.device))
        return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)

    def _upsample(self, stage1_video: torch.Tensor, tracker: _Tracker) -> torch.Tensor:
        """The x2 latent upsampler, on the un-normalized latent."""
        tracker.check()
        tracker.stage = "upsample"
        upsampled = self.components.latent_upsampler(self._denormalize(stage1_video).to(self.dtype))
        upsampled = self._normalize(upsampled.float())
        tracker.report("upsample", 1, 1)
        return upsampled

    def generate(
        self,
        request: GenerationParams,
        image: bytes | Image.Image,
        output: Path,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        image_crf: int | None = CONDITIONING_CRF,
        keyframe_images: Sequence[bytes | Image.Image] = (),
    ) -> Result:
        """Run one job and write its MP4 to `output` (atomically). Raises `Cancelled`.

        `keyframe_images` are the images of `request.keyframes`, in the same order.
        """
        tracker = _Tracker(on_progress, should_cancel)
        self.active = tracker
        timings: dict[str, float] = {}
        passes_before = self.transformer_passes
        seed = request.seed if request.seed is not None else secrets.randbelow(SEED_RANGE)
        # No try/finally around the job: freeing while an exception is in flight frees nothing (its
        # traceback holds the job's frames and their tensors). On failure the caller frees once
        # the exception is handled (pipeline.engine.Engine.generate, after its except block).
        with torch.inference_mode():
            result = self.denoise(request, image, seed, tracker, image_crf, timings, keyframe_images)
            geometry = result.geometry
            # Decode: audio first (small), then video streamed into ffmpeg one temporal tile group at a time.
            clock = time.perf_counter()
            tracker.stage = "decode"
            waveform = None
            if request.generate_audio:
                waveform = self._decode_audio(result.audio, geometry.audio_samples(OUTPUT_SAMPLE_RATE))
            frames = self._video_frames(result.video, geometry, tracker)
            del result
            path = write_mp4(
                output, frames, geometry.width, geometry.height, geometry.fps,
                request.video_quality, waveform, OUTPUT_SAMPLE_RATE, self.encoder_threads,
            )
            timings["decode_and_encode"] = time.perf_counter() - clock
        self.release_memory()
        return Result(
            path=path,
            seed=seed,
            width=geometry.width,
            height=geometry.height,
            num_frames=geometry.num_frames,
            fps=geometry.fps,
            has_audio=request.generate_audio,
            transformer_passes=self.transformer_passes - passes_before,
            timings=timings,
            adapters=[dict(adapter) for adapter in self.adapters.active],
            enhanced_prompt=self.enhanced.prompt if self.enhanced is not None else None,
            enhance_note=self.enhanced.note if self.enhanced is not None else None,
            notes=tracker.notes,
        )

    def release_memory(self) -> None:
        """Return freed tensors' memory to the device (CUDA: `empty_cache`), after collecting cycles.

        Call it where the job's tensors are unreachable: after a success, or after the handler of
        its exception has finished (the traceback keeps every frame's tensors alive until then).
        """
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()



# Allocation failures that are out-of-memory whatever the exception type says.
_OOM_TEXT = (
    "out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, and accelerator / cuBLAS / cuDNN allocation failures."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", ())
    return isinstance(exc, (RuntimeError, *([accelerator_error] if accelerator_error else []))) and any(
        text in str(exc) for text in _OOM_TEXT
    )


def oom_phase(exc: BaseException, generator: VideoGenerator) -> str | None:
    """The phase a job ran out of memory in, or None when `exc` is not an out-of-memory error."""
    if not is_out_of_memory(exc):
        return None
    return generator.active.stage if generator.active is not None else "prepare"
