"""One transformer pass over 4 gloo ranks equals 1 rank (issue 12): even and uneven shares.

The tiny model has 2 attention heads, and Ulysses needs one head per rank, so the whole-job test
runs on 2 ranks; this test builds the tiny transformer with 4 video and 4 audio heads (random
weights, every LTX-2.3 architecture flag) and checks one pass with the runtime's inputs: 24 video
tokens (6 per rank: Ulysses) and 27 (7/7/7/6: "Ulysses anything", the padded gather).
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.placement.parallel import enable_context_parallel, init_group
from pipeline.weights.registry import COMPONENT_CLASSES
from pipeline.weights.tiny import TINY_CONFIGS
from serverkit import free_port

SHAPES = [(2, 3, 4), (3, 3, 3)]  # latent (frames, height, width): 24 and 27 video tokens
AUDIO_TOKENS, TEXT_TOKENS = 13, 16


def four_head_transformer() -> torch.nn.Module:
    config = {key: value for key, value in TINY_CONFIGS["transformer"].items() if not key.startswith("_")}
    config.update(num_attention_heads=4, attention_head_dim=8, audio_num_attention_heads=4, audio_attention_head_dim=4)
    torch.manual_seed(0)
    return COMPONENT_CLASSES["transformer"](**config).eval()


def one_pass(model: torch.nn.Module, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A pass as `VideoGenerator.velocity` makes it: per-token timestep (first frame clean), coordinates given."""
    generator = torch.Generator().manual_seed(1)
    tokens, config = frames * height * width, model.config
    video_width = config.num_attention_heads * config.attention_head_dim
    audio_width = config.audio_num_attention_heads * config.audio_attention_head_dim
    mask = torch.ones(1, tokens)
    mask[:, : height * width] = 0.0
    text_mask = torch.ones(1, TEXT_TOKENS)
    text_mask[:, :3] = 0.0
    t = torch.tensor([700.0])
    with torch.inference_mode():
        return model(
            hidden_states=torch.randn(1, tokens, config.in_channels, generator=generator),
            audio_hidden_states=torch.randn(1, AUDIO_TOKENS, config.audio_in_channels, generator=generator),
            encoder_hidden_states=torch.randn(1, TEXT_TOKENS, video_width, generator=generator),
            audio_encoder_hidden_states=torch.randn(1, TEXT_TOKENS, audio_width, generator=generator),
            timestep=t.unsqueeze(-1) * mask, audio_timestep=t, sigma=t,
            encoder_attention_mask=text_mask, audio_encoder_attention_mask=text_mask,
            num_frames=frames, height=height, width=width, fps=24.0, audio_num_frames=AUDIO_TOKENS,
            video_coords=model.rope.prepare_video_coords(1, frames, height, width, "cpu", fps=24.0),
            audio_coords=model.audio_rope.prepare_audio_coords(1, AUDIO_TOKENS, "cpu"),
            use_cross_timestep=True, return_dict=False,
        )


def _rank(rank: int, size: int, address: str, out: str) -> None:
    try:
        model = four_head_transformer()
        init_group(rank, size, address, "cpu", 60.0)
        parallel = enable_context_parallel(model)
        seen: list[int] = []  # video tokens entering block 0 on this rank: the split really happens
        model.transformer_blocks[0].register_forward_pre_hook(
            lambda _module, _args, kwargs: seen.append(kwargs["hidden_states"].shape[1]), with_kwargs=True)
        results = {}
        for shape in SHAPES:
            mode = parallel.prepare_pass(shape[0] * shape[1] * shape[2])
            video, audio = one_pass(model, *shape)
            results[shape] = (mode, video, audio)
        results["seen"] = seen
        torch.save(results, Path(out) / f"rank{rank}.pt")
        # Leave the group as the runtime does (`Engine.close`), all together: a rank that exited
        # with its gloo group alive while a peer still held the pairs aborted in teardown now and then
        # ("terminate called without an active exception", SIGABRT: 4 of 12 runs on one machine).
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        (Path(out) / f"error{rank}").write_text(traceback.format_exc())
        raise


@pytest.mark.slow
def test_four_gloo_ranks_equal_one_rank(tmp_path):
    model = four_head_transformer()
    single = {shape: one_pass(model, *shape) for shape in SHAPES}
    mp.start_processes(_rank, args=(4, f"127.0.0.1:{free_port()}", str(tmp_path)), nprocs=4, start_method="spawn")
    errors = {p.name: p.read_text() for p in tmp_path.glob("error*")}
    assert not errors, errors
    for rank in range(4):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        modes = [results[shape][0] for shape in SHAPES]
        assert modes == ["ulysses", "ulysses-anything"]
        assert results["seen"] == [6, 7 if rank < 3 else 6]  # 24 = 4 x 6; 27 = 7 + 7 + 7 + 6
        for shape in SHAPES:
            _, video, audio = results[shape]
            assert video.shape == single[shape][0].shape  # every rank holds the whole output
            assert (video - single[shape][0]).abs().max().item() <= 1e-5
            assert (audio - single[shape][1]).abs().max().item() <= 1e-5
