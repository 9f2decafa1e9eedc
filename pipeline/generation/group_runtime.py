"""One job over the N ranks of a process group: the leader prepares and decodes, every rank denoises.

`GroupVideoGenerator` is the runtime's `VideoGenerator` with the transformer split over the
ranks (`pipeline.placement.parallel`). Rank 0, the leader, is driven through the door like a
single-GPU generator (`generate`); the other ranks, the followers, wait in `follow` for the
leader's next job. Per job:

1. the leader announces it (request and seed) on the group's key-value store;
2. the leader decodes the start image, runs the text encoder and the VAE encoder, and
   broadcasts the geometry, the prompt's embeddings and the image latents (followers never run
   Gemma or the VAE); an error here (a refusal, a bad image, out of memory) is broadcast too, so
   every rank leaves the job together and the group stays usable;
3. every rank runs the same denoising loop on the same noise (drawn from the same seeded CPU
   generator); each transformer pass splits the video tokens and gathers the output, so each
   rank holds the whole latent between steps; before every step the leader's cancel check is
   broadcast, so a cancel stops every rank at the same step;
4. the leader alone runs the upsampler (its result is broadcast), decodes and writes the MP4.

A failure inside a collective (a rank died, timed out, ran out of memory mid-pass) leaves the
group unusable: it surfaces as `GroupFailed` on the ranks still alive, and the process group
must be restarted (the server restarts the whole group and the job is retried).
"""

from __future__ import annotations

import gc
import pickle
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from PIL import Image

from pipeline.errors import Cancelled, GroupFailed, Refused
from pipeline.generation.conditioning import CONDITIONING_CRF
from pipeline.generation.outcome import CancelCheck, ProgressCallback, Result
from pipeline.generation.runtime import VideoGenerator, _Text, _Tracker
from pipeline.geometry import Geometry
from pipeline.params import SEED_RANGE, GenerationParams
from pipeline.placement import plan as memory_plan
from pipeline.placement.apply import Execution, compile_transformer, gpu_total_memory, placer
from pipeline.placement.parallel import ContextParallel, enable_context_parallel, init_group
from pipeline.weights.loader import load_components
from pipeline.weights.lock import require_verified

COMMAND_POLL_SECONDS = 0.05
LEADER_MODULES = ("text_encoder", "connectors", "vae", "vocoder", "latent_upsampler")


class LeaderFailed(Exception):
    """The leader could not prepare the job (refused, bad image, ...): followers drop it too."""


@dataclass(frozen=True)
class JobAnnouncement:
    """What followers need to run a job's denoising: the request (strength, sizes) and the seed."""

    request: GenerationParams
    seed: int


class CommandChannel:
    """Leader -> followers job announcements on the process group's key-value store.

    A store key per command (`cmd/<n>`), polled by followers: waiting for the next job is not
    a collective, so an idle group (or a long decode on the leader) never trips a collective
    timeout, and a follower can notice its own stop flag while it waits.
    """

    def __init__(self, store: dist.Store):
        self.store = store
        self.sequence = 0

    def send(self, command: JobAnnouncement | None) -> None:
        """Announce a job (None: stop)."""
        if self.sequence > 0:
            # Every follower read the previous command before that job's first collective could
            # complete, so the key is no longer needed (one stays, not one per job forever).
            self.store.delete_key(f"cmd/{self.sequence - 1}")
        self.store.set(f"cmd/{self.sequence}", pickle.dumps(command))
        self.sequence += 1

    def receive(self, stop: Callable[[], bool]) -> JobAnnouncement | None:
        """The next command; None for stop, or when `stop()` becomes true while waiting."""
        key = f"cmd/{self.sequence}"
        while not self.store.check([key]):
            if stop():
                return None
            time.sleep(COMMAND_POLL_SECONDS)
        command = pickle.loads(self.store.get(key))  # noqa: S301 - written by our own leader over loopback/cluster store
        self.sequence += 1
        return command


def is_collective_failure(exc: BaseException) -> bool:
    """An error from a collective (a peer died or timed out): the group cannot go on."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("Connection closed by peer", "Connection reset by peer", "Gloo", "NCCL",
                                      "ProcessGroup", "timed out", "Timed out")
    )


class GroupVideoGenerator(VideoGenerator):
    """A `VideoGenerator` whose transformer is split over a process group (see the module docstring)."""

    parallel: ContextParallel
    channel: CommandChannel
    rank: int

    @classmethod
    def load(
        cls,
        weights_dir: Path,
        device: torch.device | str,
        rank: int,
        size: int,
        address: str,
        timeout_s: float,
        plan: str | None = None,
        compile_blocks: bool = False,
    ) -> GroupVideoGenerator:
        """Load this rank's share of the model, join the process group, split the transformer over it.

        Every rank holds the whole transformer (weights are replicated, activations split). On a
        GPU the leader places everything by the memory plan (chosen for a split job: block offload
        is refused); a follower puts only the transformer on its GPU (it never runs Gemma, the
        connectors, the VAEs or the upsampler: those load into host RAM and are then freed). The ranks meet
        after loading, so one rank loading slower than another never trips the collective timeout.
        """
        device = torch.device(device)
        vram = gpu_total_memory(device)
        plan_name = memory_plan.resolve_plan(plan, vram, ranks=size) if vram is not None else plan
        if device.type == "cuda" and rank != 0:
            require_verified(weights_dir)
            actions: list[str] = []
            place_transformer = placer(plan_name, device, actions)
            components = load_components(
                weights_dir, device, torch.bfloat16,
                place=lambda name, module: place_transformer(name, module) if name == "transformer" else module,
            )
            generator = cls(components, device, torch.bfloat16)
            generator.execution = Execution(plan_name, device, vram, actions=actions)
            if compile_blocks:
                generator.execution.compiled = compile_transformer(components.transformer)
        else:
            generator = cls.from_directory(weights_dir, device, plan=plan_name, compile_blocks=compile_blocks)
        if generator.execution is not None:
            generator.execution.ranks = size  # admission divides the activations by the split
        if rank != 0:
            generator.drop_leader_modules()
        store = init_group(rank, size, address, device.type, timeout_s)
        generator.attach(enable_context_parallel(generator.components.transformer), CommandChannel(store))
        return generator

    def drop_leader_modules(self) -> None:
        """A follower frees what only the leader runs (Gemma, connectors, VAE, vocoder, upsampler).

        Without this each follower would keep ~30 GB of them in host RAM for nothing. The audio
        VAE stays: it is small and its configuration gives the audio token width.
        """
        for name in LEADER_MODULES:
            setattr(self.components, name, None)
        gc.collect()

    def attach(self, parallel: ContextParallel, channel: CommandChannel) -> None:
        """Join the split transformer and the leader's command channel (once, after loading)."""
        self.parallel = parallel
        self.channel = channel
        self.rank = dist.get_rank(parallel.group)
        self._collective = False  # inside the part of a job every rank runs together
        self.broken = False  # a collective failed: this process group must be restarted
        self._shared_error: BaseException | None = None

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    # ---- the leader's side ------------------------------------------------------------------

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
        """The leader's job: announce it, run it with the followers, decode and write the MP4 alone.

        Keyframes and LoRAs are refused: the followers hold no VAE to encode keyframes and load no
        adapters (a prompt rewrite works: it happens in the leader's preparation, before the broadcast).
        """
        if not self.is_leader:
            raise RuntimeError("only rank 0 takes jobs; other ranks run `follow`")
        if request.keyframes or keyframe_images or request.loras:
            raise Refused("keyframes, end_image and loras are not supported yet on a worker group "
                          "(--gpus-per-job > 1); send the job to a single-GPU worker")
        if request.seed is None:  # every rank must draw the same noise: fix the seed before announcing
            request = request.model_copy(update={"seed": secrets.randbelow(SEED_RANGE)})
        # Followers get the model's parameters only (not the server's request class).
        shared = GenerationParams(**{name: getattr(request, name) for name in GenerationParams.model_fields})
        self.channel.send(JobAnnouncement(shared, request.seed))
        return super().generate(request, image, output, on_progress, self._group_cancel(should_cancel), image_crf)

    def close(self) -> None:
        """Tell the followers to stop (leader), then leave the process group."""
        if self.is_leader and not self.broken:
            self.channel.send(None)
        if dist.is_initialized():
            dist.destroy_process_group()

    # ---- the followers' side ----------------------------------------------------------------

    def follow(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Run the leader's jobs until it says stop (or `stop()` while idle). Raises `GroupFailed`."""
        while True:
            command = self.channel.receive(stop)
            if command is None:
                return
            self.run_follower_job(command)

    def run_follower_job(self, command: JobAnnouncement) -> None:
        """One job's collective part on a follower; a cancel or the leader's refusal ends it quietly."""
        tracker = _Tracker(None, self._group_cancel(None))
        try:
            with torch.inference_mode():
                self.denoise(command.request, None, command.seed, tracker)  # type: ignore[arg-type]
        except (Cancelled, LeaderFailed):
            pass
        finally:
            self.release_memory()

    # ---- the collective part of a job, on every rank ----------------------------------------

    def denoise(self, request, image, seed, tracker=None, image_crf=CONDITIONING_CRF, timings=None,  # noqa: ANN001
                keyframe_images=()):
        """`VideoGenerator.denoise` with the group: collective from the start to the final latents."""
        # Every rank must reach the same collectives: the cancel check is always the group's.
        tracker = tracker or _Tracker(None, self._group_cancel(None))
        self._collective = True
        try:
            return super().denoise(request, image, seed, tracker, image_crf, timings, keyframe_images)
        except (Cancelled, LeaderFailed):
            raise  # every rank left at the same point: the group is intact
        except BaseException as exc:
            if exc is not self._shared_error:  # anything else mid-collective leaves the others stuck or gone
                self.broken = True
            raise
        finally:
            self._collective = False
            self._shared_error = None

    def velocity(self, video: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One split transformer pass (the mode follows this pass's token count)."""
        self.parallel.prepare_pass(video.shape[1])
        return super().velocity(video, *args, **kwargs)

    def _prepare(
        self, request: GenerationParams, image: bytes | Image.Image | None, tracker: _Tracker, image_crf: int | None,
        seed: int = 0,
    ) -> tuple[Geometry, _Text, torch.Tensor, torch.Tensor]:
        """The leader prepares and broadcasts; followers receive. A leader error is broadcast and re-raised."""
        if self.is_leader:
            try:
                prepared = super()._prepare(request, image, tracker, image_crf, seed)
            except Cancelled:
                raise  # the cancel check itself was collective: the followers stopped at the same point
            except Exception as exc:
                self._broadcast_object(("error", f"{type(exc).__name__}: {exc}"))
                self._shared_error = exc  # every rank leaves this job together: the group is intact
                raise
            geometry, text, image1, image2 = prepared
            tensors = [text.video, text.audio, text.mask, image1, image2]
            self._broadcast_object(("ok", geometry, [(t.shape, t.dtype) for t in tensors]))
            for tensor in tensors:
                dist.broadcast(tensor.contiguous(), 0, group=self.parallel.group)
            return prepared
        tracker.check()  # the leader's _prepare starts with the same (collective) check
        message = self._broadcast_object(None)
        if message[0] == "error":
            raise LeaderFailed(message[1])
        _, geometry, specs = message
        tensors = [torch.empty(shape, dtype=dtype, device=self.device) for shape, dtype in specs]
        for tensor in tensors:
            dist.broadcast(tensor, 0, group=self.parallel.group)
        video, audio, mask, image1, image2 = tensors
        return geometry, _Text(video, audio, mask), image1, image2

    def _upsample(self, stage1_video: torch.Tensor, tracker: _Tracker) -> torch.Tensor:
        """The leader upsamples and broadcasts the result (followers need no upsampler weights)."""
        if self.is_leader:
            upsampled = super()._upsample(stage1_video, tracker).contiguous()
        else:
            tracker.check()
            batch, channels, frames, height, width = stage1_video.shape
            upsampled = torch.empty((batch, channels, frames, 2 * height, 2 * width), dtype=torch.float32,
                                    device=self.device)
        dist.broadcast(upsampled, 0, group=self.parallel.group)
        return upsampled

    def _group_cancel(self, local: CancelCheck | None) -> CancelCheck:
        """A cancel check every rank calls at the same points: the leader's answer, broadcast."""

        def should_cancel() -> bool:
            flag = bool(local()) if local is not None else False
            if not self._collective:  # decoding on the leader alone
                return flag
            box = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
            dist.broadcast(box, 0, group=self.parallel.group)
            return bool(box.item())

        return should_cancel

    def _broadcast_object(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, 0, group=self.parallel.group, device=self.device)
        return box[0]


def raise_group_failure(exc: BaseException) -> None:
    """Re-raise a collective failure as the door's `GroupFailed` (other errors unchanged)."""
    if is_collective_failure(exc):
        raise GroupFailed(f"a rank of the GPU group failed or stopped answering ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
