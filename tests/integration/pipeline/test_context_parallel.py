"""One job split over 2 gloo ranks on the CPU equals the 1-rank job (issue 12); a refused job leaves the group intact.

The real group runtime (`Engine.load` with a `RankGroup`: TCP store, gloo, diffusers' context
parallelism with our plan) runs in 2 spawned processes on the tiny model; the 1-rank run is the
ordinary `VideoGenerator`. The job's stage 1 has 27 video tokens (uneven split: "Ulysses
anything") and stage 2 108 (even: Ulysses), so both modes and the uneven gather are exercised.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from pipeline.engine import Engine, EngineSpec, RankGroup
from pipeline.errors import StartImageError
from pipeline.generation.group_runtime import JobAnnouncement
from pipeline.generation.runtime import _Tracker
from pipeline.params import GenerationParams
from sample_media import png_bytes, read_mp4
from serverkit import free_port

IMAGE = png_bytes(96, 64, seed=3)
SMALL = GenerationParams(prompt="after a refusal", resolution="128x128", num_frames=9, seed=2)
REQUEST = GenerationParams(prompt="a lighthouse at dusk", resolution="192x192", num_frames=17, seed=11,
                           image_strength=0.9)


def decoded_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _rank(rank: int, size: int, address: str, weights: str, out: str) -> None:
    """One rank of the group: rank 0 runs the job (latents, then the whole generate); the other follows."""
    torch.set_num_threads(1)
    try:
        engine = Engine.load(EngineSpec(weights=weights, device="cpu", group=RankGroup(rank, size, address, 60.0)))
        generator = engine._generator
        if rank == 0:
            with torch.inference_mode():
                generator.channel.send(JobAnnouncement(REQUEST, REQUEST.seed))
                denoised = generator.denoise(REQUEST, IMAGE, REQUEST.seed)
            torch.save({"video": denoised.video, "audio": denoised.audio}, Path(out) / "latents.pt")
            result = engine.generate(REQUEST, IMAGE, Path(out) / "group.mp4")
            (Path(out) / "passes").write_text(str(result.transformer_passes))
            # A job the leader refuses while preparing: every rank leaves it, the group goes on.
            try:
                engine.generate(SMALL, b"not an image", Path(out) / "refused.mp4")
            except StartImageError as exc:
                (Path(out) / "refused").write_text(str(exc))
            engine.generate(SMALL, IMAGE, Path(out) / "after.mp4")
            (Path(out) / "restart").write_text(str(engine.needs_restart))
            engine.close()
        else:
            seen: list[int] = []  # video tokens entering block 0 on this rank: the split really happens
            generator.components.transformer.transformer_blocks[0].register_forward_pre_hook(
                lambda _module, _args, kwargs: seen.append(kwargs["hidden_states"].shape[1]), with_kwargs=True)
            engine.follow()
            (Path(out) / f"follower{rank}").write_text(str(engine.transformer_passes))
            (Path(out) / f"seen{rank}").write_text(" ".join(map(str, sorted(set(seen)))))
            engine.close()  # leave the process group as `run_follower` does, not in the interpreter's teardown
    except BaseException:
        (Path(out) / f"error{rank}").write_text(traceback.format_exc())
        raise


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_rank(tiny_weights, tiny_generator, tmp_path):
    with torch.inference_mode():
        single = tiny_generator.denoise(REQUEST, IMAGE, REQUEST.seed)
    reference = tiny_generator.generate(REQUEST, IMAGE, tmp_path / "single.mp4")

    mp.start_processes(_rank, args=(2, f"127.0.0.1:{free_port()}", str(tiny_weights), str(tmp_path)),
                       nprocs=2, start_method="spawn")
    errors = {p.name: p.read_text() for p in tmp_path.glob("error*")}
    assert not errors, errors

    split = torch.load(tmp_path / "latents.pt")
    assert split["video"].shape == single.video.shape and split["audio"].shape == single.audio.shape
    video_error = (split["video"] - single.video).abs().max().item()
    audio_error = (split["audio"] - single.audio).abs().max().item()
    print(f"2 ranks vs 1: final latents max |diff| video {video_error:.2e}, audio {audio_error:.2e}")
    assert video_error <= 1e-5 and audio_error <= 1e-5

    # The whole generate: one MP4, from rank 0; 11 passes on each rank; frames as the 1-rank MP4's.
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["after.mp4", "group.mp4", "single.mp4"]
    assert (tmp_path / "passes").read_text() == "11"
    # the latents run, the generate and the job after the refusal: 11 passes each, none for the refused one
    assert (tmp_path / "follower1").read_text() == "33"
    assert (tmp_path / "refused").read_text() and (tmp_path / "restart").read_text() == "False"
    # rank 1's share: 13 of stage 1's 27 tokens (uneven), 54 of stage 2's 108; 4 of 8 for the 128x128 job
    assert (tmp_path / "seen1").read_text() == "4 13 16 54"
    facts = read_mp4(tmp_path / "group.mp4")
    assert (facts.width, facts.height, facts.video_frames) == (192, 192, reference.num_frames)
    # Latents equal to 1e-5 decode to the same 8-bit frames, up to a rare rounding step...
    with torch.inference_mode():
        group_pixels, single_pixels = (
            np.concatenate(list(tiny_generator._video_frames(latents, single.geometry, _Tracker(None, None))))
            for latents in (split["video"], single.video)
        )
    assert np.abs(group_pixels.astype(int) - single_pixels.astype(int)).max() <= 1
    # ...which H.264 codes with a few different decisions (random weights draw noise-like
    # pictures): the two MP4s decode to frames as close to each other as each is to the pixels
    # it encoded.
    ours, theirs = decoded_frames(tmp_path / "group.mp4"), decoded_frames(reference.path)
    assert ours.shape == theirs.shape == single_pixels.shape
    between, own_loss = psnr(ours, theirs), psnr(theirs, single_pixels)
    print(f"group vs 1-rank MP4: PSNR {between:.1f} dB; 1-rank MP4 vs its own frames: {own_loss:.1f} dB")
    assert between >= own_loss - 1.0
    assert abs(psnr(ours, group_pixels) - own_loss) <= 1.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(error, 1e-12)))
