"""Execution plans applied to the tiny model on the CPU: what can be shown without a GPU.

The swaps, fp8 storage, SDPA, compile-once and VAE tiling switches run for real here (with
"cpu" standing in for the GPU); CUDA-stream group offloading cannot run on a CPU, so its
configuration is checked by recording the diffusers calls.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import RequestTooLarge
from pipeline.generation.runtime import VideoGenerator
from pipeline.geometry import job_geometry
from pipeline.params import GenerationParams
from pipeline.placement import apply as execution
from pipeline.placement.apply import (
    EncoderSwap,
    Execution,
    apply_plan,
    choose,
    compile_transformer,
    load_device,
    placer,
)
from pipeline.placement.plan import GiB
from pipeline.weights.loader import load_components
from pipeline.weights.tiny import ensure_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("exec"))


def _image() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_choose_on_a_cpu():
    assert choose("cpu") == ("resident", None)
    assert choose("cpu", "fp8") == ("fp8", None)


def test_encoder_offload_swaps_gemma_per_call_and_the_prompt_cache_skips_it(tiny_dir):
    reference = VideoGenerator(load_components(tiny_dir), "cpu")
    components = load_components(tiny_dir)
    lm = execution.language_model(components.text_encoder)
    plan = apply_plan(components, "encoder-offload", device="cpu")
    assert plan.plan == "encoder-offload" and plan.encoder_swaps
    assert isinstance(components.text_encoder.lm_head, torch.nn.Identity)

    # While Gemma runs, its weights are fresh copies ("onloaded"); afterwards the host copies.
    host_ptr = lm.layers[0].self_attn.q_proj.weight.data_ptr()
    seen = []
    lm.layers[0].register_forward_hook(lambda m, a, o: seen.append(m.self_attn.q_proj.weight.data_ptr()))
    generator = VideoGenerator(components, "cpu")
    text = generator.encode_prompt("a red fox runs")
    assert seen and seen[0] != host_ptr
    assert lm.layers[0].self_attn.q_proj.weight.data_ptr() == host_ptr
    # Same embeddings as without the plan: the swap and the dropped lm_head change nothing.
    expected = reference.encode_prompt("a red fox runs")
    torch.testing.assert_close(text.video, expected.video)
    torch.testing.assert_close(text.audio, expected.audio)

    # A repeated prompt comes from the LRU cache: no encoder call, no swap.
    generator.encode_prompt("a red fox runs")
    assert generator.text_encoder_calls == 1 and plan.encoder_onloads == 1
    generator.encode_prompt("a blue bird")
    assert generator.text_encoder_calls == 2 and plan.encoder_onloads == 2


def test_fp8_plan_stores_the_transformer_in_fp8_and_still_generates(tiny_dir, tmp_path):
    components = load_components(tiny_dir, dtype=torch.bfloat16)
    plan = apply_plan(components, "fp8", device="cpu")
    block = components.transformer.transformer_blocks[0]
    linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    norms = [p for n, p in components.transformer.named_parameters() if "norm" in n]
    assert all(p.dtype == torch.bfloat16 for p in norms)  # layerwise casting skips norms
    # Gemma streams layer by layer: one swap per decoder layer, embeddings resident.
    lm = execution.language_model(components.text_encoder)
    assert len(plan.encoder_swaps) == len(lm.layers)
    generator = VideoGenerator(components, "cpu", dtype=torch.bfloat16)
    request = GenerationParams(prompt="waves", num_frames=9, resolution="256x256")
    result = generator.generate(request, _image(), tmp_path / "out.mp4", image_crf=0)
    assert result.path.stat().st_size > 0 and result.transformer_passes == 11
    assert all(swap.calls == 1 for swap in plan.encoder_swaps)


def test_offload_plan_configures_stream_group_offloading(tiny_dir, monkeypatch):
    calls = []

    def record_model(self, **kwargs):
        calls.append(("transformer", kwargs))

    def record_hook(module, **kwargs):
        calls.append((type(module).__name__, kwargs))

    monkeypatch.setattr(type(load_components(tiny_dir).transformer), "enable_group_offload", record_model)
    monkeypatch.setattr(execution, "apply_group_offloading", record_hook)
    components = load_components(tiny_dir)
    plan = apply_plan(components, "offload", device="cpu")
    by = dict(calls)
    t = by["transformer"]
    assert t["offload_type"] == "block_level" and t["num_blocks_per_group"] == 1
    assert t["use_stream"] and t["record_stream"] and not t["low_cpu_mem_usage"]
    c = by["LTX2TextConnectors"]
    assert c["offload_type"] == "leaf_level" and c["use_stream"]
    assert plan.encoder_swaps  # Gemma streamed by layer swaps
    assert any("group offload" in a for a in plan.actions)


def test_regional_compile_happens_once_per_worker(tiny_dir, monkeypatch):
    components = load_components(tiny_dir)
    counter = []
    monkeypatch.setattr(
        type(components.transformer), "compile_repeated_blocks", lambda self, **kw: counter.append(kw), raising=True
    )
    plan = apply_plan(components, "resident", device="cpu", compile_blocks=True)
    assert plan.compiled and counter == [{"fullgraph": True}]
    assert compile_transformer(components.transformer) is False  # already compiled: no-op
    assert len(counter) == 1


def test_sdpa_is_selected(tiny_dir):
    components = load_components(tiny_dir)
    plan = apply_plan(components, "resident", device="cpu")
    assert components.text_encoder.config._attn_implementation == "sdpa"
    assert any(a.startswith("transformer: SDPA") for a in plan.actions)


def test_diffusers_vae_tiling_stays_off_under_the_reference_tiling(tiny_dir):
    components = load_components(tiny_dir)
    plan = apply_plan(components, "resident", device="cpu")
    components.vae.enable_tiling()
    # True: the runtime's own (reference) tiling splits 1536x1024 frames; diffusers' never applies on top.
    assert plan.prepare_decode(components.vae, 1536, 1024) and not components.vae.use_tiling
    assert not plan.prepare_decode(components.vae, 512, 512) and not components.vae.use_tiling


def test_requests_are_refused_before_work_on_a_small_gpu():
    on_cpu = Execution("resident", torch.device("cpu"), None)
    assert on_cpu.check(job_geometry(2048, 2048, 481)) is None  # the CPU path has no VRAM budget
    gpu24 = Execution("offload", torch.device("cuda"), 24 * GiB)
    assert gpu24.check(job_geometry(1024, 576, 121)).peak < 24 * GiB
    with pytest.raises(RequestTooLarge, match="1536x1024, 481 frames"):
        gpu24.check(job_geometry(1536, 1024, 481))


def test_encoder_swap_shares_tied_tensors_once():
    a = torch.nn.Linear(4, 4)
    b = torch.nn.Linear(4, 4)
    b.weight = a.weight  # tied
    swap = EncoderSwap(a, [a, b], "cpu", pin=False)
    assert swap.nbytes == (16 + 4 + 4) * 4
    a(torch.zeros(1, 4))
    assert swap.calls == 1
    swap.remove()
    a(torch.zeros(1, 4))
    assert swap.calls == 1


def test_placing_components_as_they_load_then_applying_the_plan(tiny_dir):
    """The loader path: `placer` places each component as it loads, `apply_plan` then only records."""
    from pipeline.placement.apply import placer

    actions: list[str] = []
    place = placer("encoder-offload", "cpu", actions)
    components = load_components(tiny_dir)
    for name, module in components.modules().items():  # what a loader with `place=` does per component
        setattr(components, name, place(name, module))
    plan = apply_plan(components, "encoder-offload", device="cpu", already_placed=True, actions=actions)
    assert len(plan.encoder_swaps) == 1 and any("swapped onto the GPU" in a for a in plan.actions)
    generator = VideoGenerator(components, "cpu")
    generator.encode_prompt("a quiet lake")
    assert plan.encoder_onloads == 1


def test_placer_says_where_each_component_should_load():
    """A loader asks `device_for`: straight to the GPU unless the plan starts from host tensors."""
    gpu, host = torch.device("cuda"), torch.device("cpu")
    names = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "latent_upsampler", "text_encoder")
    expected = {
        "resident": dict.fromkeys(names, gpu),
        "encoder-offload": {**dict.fromkeys(names, gpu), "text_encoder": host},  # swapped from host RAM
        "fp8": {**dict.fromkeys(names, gpu), "transformer": host, "text_encoder": host},  # cast on the host
        "offload": {**dict.fromkeys(names, gpu), "transformer": host, "connectors": host, "text_encoder": host},
    }
    for plan, devices in expected.items():
        assert {name: load_device(name, plan, "cuda") for name in names} == devices, plan
        place = placer(plan, "cuda", [])
        assert {name: place.device_for(name) for name in names} == devices, plan
