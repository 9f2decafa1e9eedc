"""Our runtime against bare diffusers 0.42.1 (LTX2ConditionPipeline + LTX2LatentUpsamplePipeline).

Same modules, same seed: the two-stage latents must agree bit for bit where the two agree on the
semantics (image_strength 1.0 and 0.0), in exactly 11 transformer passes each.
"""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.generation.schedule import unpack_audio
from pipeline.geometry import plan_geometry
from pipeline.params import GenerationParams
from repo_paths import REPO

sys.path.insert(0, str(REPO / "bench"))
from diffusers_baseline import build_pipelines, run_two_stages  # noqa: E402

IMAGE = Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize("strength", [1.0, 0.0])
def test_two_stage_latents_match_diffusers_bit_for_bit(tiny_generator, strength):
    request = GenerationParams(prompt="a cat on a sofa", num_frames=17, resolution="128x192",
                           image_strength=strength, seed=3)
    geometry = plan_geometry(request, IMAGE.width, IMAGE.height)
    passes = tiny_generator.transformer_passes
    with torch.inference_mode():
        ours = tiny_generator.denoise(request, IMAGE, seed=3)
        ours_passes = tiny_generator.transformer_passes - passes
        theirs = run_two_stages(build_pipelines(tiny_generator.components), request.prompt, IMAGE, geometry,
                                strength, seed=3)
    theirs_passes = tiny_generator.transformer_passes - passes - ours_passes
    assert ours_passes == theirs_passes == 11
    assert torch.equal(tiny_generator._denormalize(ours.video), theirs.video)
    mel_bins = theirs.audio.shape[-1]
    assert torch.equal(unpack_audio(ours.audio, mel_bins), theirs.audio)


def test_diffusers_defaults_would_run_many_more_passes(tiny_generator):
    request = GenerationParams(prompt="a cat", num_frames=9, resolution="128x128", seed=1)
    geometry = plan_geometry(request, IMAGE.width, IMAGE.height)
    passes = tiny_generator.transformer_passes
    with torch.inference_mode():
        run_two_stages(build_pipelines(tiny_generator.components), request.prompt, IMAGE, geometry, 1.0, seed=1,
                       guidance={})
    # CFG + STG + modality guidance: batch-2 pass + two more per step (8 + 3 steps).
    assert tiny_generator.transformer_passes - passes == 3 * 11
