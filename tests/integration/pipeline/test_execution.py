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
    # Streams exist only on CUDA: on this CPU "device" the same hooks run synchronously.
    assert not t["use_stream"] and not t["record_stream"] and not t["low_cpu_mem_usage"]
    c = by["LTX2TextConnectors"]
    assert c["offload_type"] == "leaf_level" and not c["use_stream"]
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


# ---- issue 15: the GPU-only defects, each shown on the CPU ----


def test_encoder_swap_offloads_even_when_the_forward_raises():
    """An OOM while encoding must not leave Gemma's weights on the GPU (every later job would OOM too)."""

    class Exploding(torch.nn.Linear):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    layer = Exploding(4, 4)
    swap = EncoderSwap(layer, [layer], "cpu", pin=False)
    host = layer.weight.data_ptr()
    with pytest.raises(torch.OutOfMemoryError):
        layer(torch.zeros(1, 4))
    assert swap.calls == 1  # it was copied in...
    assert layer.weight.data_ptr() == host  # ...and dropped again although the forward raised


def _fp8_and_other(module: torch.nn.Module) -> tuple[int, int]:
    fp8 = sum(p.numel() for p in module.parameters() if p.dtype == execution.FP8_STORAGE)
    return fp8, sum(p.numel() for p in module.parameters()) - fp8


def test_fp8_keeps_the_modulation_layers_of_the_real_transformer_in_bf16():
    """On the real config (meta device): only the repeated blocks' layers become fp8."""
    from pipeline.placement import plan as mp
    from pipeline.weights.registry import REAL_CONFIGS, meta_module

    transformer = meta_module("transformer", {"transformer": REAL_CONFIGS["transformer"]}).to(torch.bfloat16)
    execution.place_component("transformer", transformer, "fp8", "meta")
    fp8, other = _fp8_and_other(transformer)
    outside = [transformer.time_embed, transformer.audio_time_embed, transformer.prompt_adaln,
               transformer.audio_prompt_adaln, transformer.av_cross_attn_video_scale_shift,
               transformer.av_cross_attn_audio_scale_shift, transformer.av_cross_attn_video_a2v_gate,
               transformer.av_cross_attn_audio_v2a_gate, transformer.proj_in, transformer.audio_proj_in,
               transformer.proj_out, transformer.audio_proj_out]
    assert all(p.dtype == torch.bfloat16 for m in outside for p in m.parameters())
    # Every Linear inside the blocks is fp8; what stays bf16 there: the per-block scale/shift tables and q/k norms.
    block_linears = [m for m in transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert all(m.weight.dtype == execution.FP8_STORAGE for m in block_linears)
    assert fp8 == sum(p.numel() for m in block_linears for p in m.parameters())
    assert mp.TRANSFORMER_BLOCK_PARAMS - fp8 < 7e6
    assert other == mp.TRANSFORMER_PARAMS - fp8
    assert 0.42e9 < other < 0.44e9  # ≈ 0.85 GB of bf16 kept (was 8M parameters: 18.981B of 18.989B in fp8)


def test_fp8_on_the_tiny_model_keeps_the_non_block_layers_bf16(tiny_dir):
    components = load_components(tiny_dir, dtype=torch.bfloat16)
    apply_plan(components, "fp8", device="cpu")
    t = components.transformer
    for name, child in t.named_children():
        dtypes = {p.dtype for p in child.parameters()}
        if name == "transformer_blocks":
            assert execution.FP8_STORAGE in dtypes
        else:
            assert dtypes <= {torch.bfloat16}, name


def test_compile_is_skipped_with_a_log_line_under_fp8_and_the_job_still_runs(tiny_dir, tmp_path, caplog):
    components = load_components(tiny_dir, dtype=torch.bfloat16)
    with caplog.at_level("WARNING", logger="pipeline.placement.apply"):
        plan = apply_plan(components, "fp8", device="cpu", compile_blocks=True)
    assert not plan.compiled and not getattr(components.transformer, execution._COMPILED_MARK, False)
    assert any("regional compile skipped" in a for a in plan.actions)
    assert "--compile skipped under plan fp8" in caplog.text
    generator = VideoGenerator(components, "cpu", dtype=torch.bfloat16)
    result = generator.generate(GenerationParams(prompt="waves", num_frames=9, resolution="256x256"), _image(),
                                tmp_path / "out.mp4", image_crf=0)
    assert result.transformer_passes == 11


def test_offload_plan_runs_on_the_cpu_with_the_non_block_layers_resident(tiny_dir, tmp_path):
    """Block-level group offloading for real (no streams on a CPU): blocks grouped, the rest kept resident."""
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING

    components = load_components(tiny_dir)
    plan = apply_plan(components, "offload", device="cpu")
    t = components.transformer
    group = t._diffusers_hook.get_hook(_GROUP_OFFLOADING).group
    # The "unmatched" group (everything but the blocks) no longer moves: its offload device is the GPU's.
    assert group.offload_device == group.onload_device == torch.device("cpu")
    grouped = {id(p) for m in group.modules for p in m.parameters()} | {id(p) for p in group.parameters}
    blocks = {id(p) for p in t.transformer_blocks.parameters()}
    assert grouped == {id(p) for p in t.parameters()} - blocks
    assert all(b._diffusers_hook.get_hook(_GROUP_OFFLOADING) is not None for b in t.transformer_blocks)
    assert any("non-block layers resident" in a for a in plan.actions)
    generator = VideoGenerator(components, "cpu")
    result = generator.generate(GenerationParams(prompt="waves", num_frames=9, resolution="256x256"), _image(),
                                tmp_path / "out.mp4", image_crf=0)
    assert result.transformer_passes == 11


def test_keep_unmatched_resident_changes_where_the_rest_is_offloaded_to():
    """Without it the non-block group is offloaded to the host after every pass (diffusers' default).

    A CPU has one device, so "cpu:0" stands in for the GPU: the group's offload device turns from
    the host into the onload device, which makes the offload after each pass a no-op (on CUDA,
    bench/gpu_check.py checks that the layers really stay on the GPU).
    """
    from diffusers.hooks import apply_group_offloading
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING

    gpu, host = torch.device("cpu", 0), torch.device("cpu")
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])
    model.embed = torch.nn.Linear(4, 4)
    apply_group_offloading(model, onload_device=gpu, offload_device=host, offload_type="block_level",
                           num_blocks_per_group=1)
    group = model._diffusers_hook.get_hook(_GROUP_OFFLOADING).group
    assert group.modules == [model.embed] and group.offload_device == host  # diffusers: back to the host
    assert execution.keep_unmatched_resident(model, gpu) is model
    assert group.offload_device == gpu == group.onload_device
    assert execution.keep_unmatched_resident(torch.nn.Linear(2, 2), gpu) is None  # no group offloading: nothing


def test_pinning_goes_tensor_by_tensor_so_the_load_never_holds_two_copies():
    """Each parameter lets go of its pageable tensor before the next one is pinned.

    diffusers' own pinning builds every pinned copy while the parameters still hold their pageable
    tensors (two full copies at load); here, when the k-th tensor is pinned, the k-1 before it
    already point at their pinned copies, so each pageable tensor can be freed at once.
    """
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(4)])
    params = list(model.parameters())
    pinned: list[torch.Tensor] = []
    swapped_before = []

    def pin(tensor: torch.Tensor) -> torch.Tensor:  # stands in for Tensor.pin_memory (needs CUDA)
        swapped_before.append(all(p.data_ptr() == c.data_ptr() for p, c in zip(params, pinned, strict=False)))
        pinned.append(tensor.clone())
        return pinned[-1]

    assert execution.pin_in_place(model, pin) == 8
    assert swapped_before == [True] * 8 and len(pinned) == 8
    assert all(p.data_ptr() == c.data_ptr() for p, c in zip(params, pinned, strict=True))
    assert execution.pin_in_place(torch.nn.Linear(2, 2)) == 2  # without CUDA: nothing to pin, nothing breaks


def test_a_fullgraph_compile_of_fp8_blocks_fails_which_is_why_it_is_skipped(tiny_dir, tmp_path):
    """Dynamo (eager backend, no codegen) on the fp8-cast blocks: it stops at the casting hook's
    `torch.nn.Parameter()`. If a torch or diffusers release lifts this, this test fails and the
    skip (`PlanSpec.compile_blocker`) can go."""
    components = load_components(tiny_dir, dtype=torch.bfloat16)
    apply_plan(components, "fp8", device="cpu")
    compile_transformer(components.transformer, backend="eager")
    generator = VideoGenerator(components, "cpu", dtype=torch.bfloat16)
    try:
        with pytest.raises(torch._dynamo.exc.Unsupported, match=r"torch\.nn\.Parameter"):
            generator.generate(GenerationParams(prompt="waves", num_frames=9, resolution="128x128"), _image(),
                               tmp_path / "out.mp4", image_crf=0)
    finally:
        torch._dynamo.reset()
