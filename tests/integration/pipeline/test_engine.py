"""The pipeline's one door: load, generate, admit; out-of-memory translated with its phase."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import weakref
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import pipeline.engine as engine_module
from pipeline.engine import (
    PLAN_NAMES,
    Capacity,
    Engine,
    EngineSpec,
    GiB,
    admit,
    describe_weights,
    gpu_plans,
    image_size,
    memory_plan,
)
from pipeline.errors import OutOfMemory, PlanError, RequestTooLarge, StartImageError, WeightsError
from pipeline.params import GenerationParams


def png(width: int = 96, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def engine(data_dir) -> Engine:
    return Engine.load(EngineSpec(weights="tiny", data_dir=data_dir))


PARAMS = GenerationParams(prompt="a test", num_frames=9, resolution="128x128", seed=3)


def test_generate_through_the_door(engine, tmp_path):
    assert engine.info.smoke_test and engine.info.notice
    progress = []
    result = engine.generate(PARAMS, png(), tmp_path / "out.mp4", progress.append)
    assert result.path.is_file() and (result.width, result.height, result.num_frames) == (128, 128, 9)
    assert result.transformer_passes == 11
    assert [p.stage for p in progress][-1] == "decode" and progress[-1].fraction == 1.0


def test_a_prompt_cut_by_the_text_encoder_is_noted(engine, tmp_path):
    # The tiny tokenizer has one token per character: 1,500 characters are 1,500+ tokens, over 1,024.
    long = PARAMS.model_copy(update={"prompt": "a" * 1500})
    result = engine.generate(long, png(), tmp_path / "long.mp4")
    assert len(result.notes) == 1 and result.notes[0].startswith("The prompt is ")
    assert result.notes[0].endswith("tokens long; the text encoder read only its first 1024.")
    assert engine.generate(PARAMS, png(), tmp_path / "short.mp4").notes == []


def test_out_of_memory_names_the_phase_and_the_next_job_runs(engine, tmp_path):
    def exhausted(progress):
        if progress.stage == "stage2":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory, match="during stage2") as caught:
        engine.generate(PARAMS, png(), tmp_path / "oom.mp4", exhausted)
    assert caught.value.phase == "stage2" and "fewer frames" in str(caught.value)
    assert not (tmp_path / "oom.mp4").exists()
    assert engine.generate(PARAMS, png(), tmp_path / "next.mp4").path.is_file()


def test_out_of_memory_cleanup_runs_after_the_jobs_tensors_are_gone(engine, tmp_path, monkeypatch):
    """The memory is released once nothing holds the failed job's tensors (weak references show it).

    Freeing inside the `except` (or a `finally` while the exception is in flight) frees nothing:
    the traceback keeps every frame of the job alive, with its latents.
    """
    generator = engine._generator
    job_tensors: list[weakref.ref] = []
    passes = []

    def fail_in_stage2(module, args, kwargs):
        passes.append(1)
        job_tensors.extend(weakref.ref(kwargs[name]) for name in ("hidden_states", "audio_hidden_states",
                                                                    "timestep", "video_coords"))
        if len(passes) == 9:  # the first stage-2 pass
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    released_with = []
    release = generator.release_memory
    monkeypatch.setattr(generator, "release_memory",
                        lambda: (released_with.append([ref() is not None for ref in job_tensors]), release()))
    handle = generator.components.transformer.register_forward_pre_hook(fail_in_stage2, with_kwargs=True)
    try:
        with pytest.raises(OutOfMemory, match="during stage2"):
            engine.generate(PARAMS, png(), tmp_path / "oom.mp4")
    finally:
        handle.remove()
    assert len(passes) == 9 and job_tensors
    assert len(released_with) == 1  # once, where it can work: not also while the exception was in flight
    assert not any(released_with[0])  # every tensor of the failed job was gone when memory was released
    assert all(ref() is None for ref in job_tensors)


def test_cublas_allocation_failure_counts_as_out_of_memory(engine, tmp_path):
    def fails(progress):
        if progress.stage == "decode":
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    with pytest.raises(OutOfMemory, match="during decode"):
        engine.generate(PARAMS, png(), tmp_path / "cublas.mp4", fails)


def test_admit_refuses_what_cannot_fit_and_reads_the_upright_size():
    assert image_size(png(300, 200)) == (300, 200)
    with pytest.raises(StartImageError):
        image_size(b"not an image")
    big = GenerationParams(prompt="x", num_frames=481, resolution="2048x2048")
    with pytest.raises(RequestTooLarge, match="GiB"):
        admit(big, (2048, 2048), Capacity("offload", 24 * 2**30))
    admit(big, (2048, 2048), None)  # no GPU: nothing to check
    admit(PARAMS, (128, 128), Capacity("resident", 141 * 2**30))


def test_the_door_imports_no_torch():
    """The API process imports the door, decodes start images and admits jobs: none of it may import torch."""
    code = textwrap.dedent("""
        import io, sys
        from PIL import Image
        import pipeline.engine as door, pipeline.params, pipeline.errors
        buffer = io.BytesIO()
        Image.new("RGB", (300, 200)).save(buffer, "PNG")
        assert door.image_size(buffer.getvalue()) == (300, 200)
        params = pipeline.params.GenerationParams(prompt="x", num_frames=481, resolution="2048x2048")
        try:
            door.admit(params, (300, 200), door.Capacity("offload", 24 * door.GiB))
        except pipeline.errors.RequestTooLarge:
            pass
        else:
            raise AssertionError("admit let through a job that cannot fit")
        door.admit(params, (300, 200), door.Capacity("resident", 1000 * door.GiB))
        chosen = door.memory_plan("auto", 48 * door.GiB)
        print(chosen.plan, chosen.summary.startswith("memory plan fp8"))
        print(sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["fp8 True", "[]"]


def test_memory_plan_for_a_stated_card():
    chosen = memory_plan(None, 48 * GiB)
    assert (chosen.index, chosen.vram_bytes, chosen.plan) == (-1, 48 * GiB, "fp8")
    assert chosen.summary.startswith("memory plan fp8") and chosen.capacity == Capacity("fp8", 48 * GiB)
    assert memory_plan("offload", 141 * GiB).plan == "offload"
    with pytest.raises(PlanError, match="unknown plan 'fastest'"):
        memory_plan("fastest", 80 * GiB)
    with pytest.raises(ValueError, match="cannot run LTX-2.3 under any plan"):  # PlanError is a ValueError
        memory_plan(None, 8 * GiB)
    assert set(PLAN_NAMES) == {"resident", "encoder-offload", "fp8", "offload"}


def test_gpu_plans_name_each_visible_gpu(monkeypatch):
    cards = {0: ("NVIDIA H100 80GB HBM3", 85_031_714_816), 1: ("NVIDIA L40S", 48 * GiB)}
    props = lambda index: SimpleNamespace(name=cards[index][0], total_memory=cards[index][1])  # noqa: E731
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(cards))
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(engine_module, "physical_memory_bytes", lambda: 512 * GiB)
    plans = gpu_plans(None)
    assert [(p.index, p.name, p.plan) for p in plans] == [
        (0, "NVIDIA H100 80GB HBM3", "encoder-offload"), (1, "NVIDIA L40S", "fp8"),
    ]
    assert plans[1].summary == memory_plan(None, 48 * GiB).summary
    assert min(plans, key=lambda p: p.vram_bytes).capacity == Capacity("fp8", 48 * GiB)
    assert [p.plan for p in gpu_plans("offload")] == ["offload", "offload"]
    with pytest.raises(PlanError, match="GPU 0: unknown plan"):
        gpu_plans("fastest")
    # Each GPU's worker pins its own weights: the host's RAM is shared out between them. 96 GiB is
    # plenty for one 48 GB card under fp8 (≈ 41 GiB), not for two workers' pinned weights.
    monkeypatch.setattr(engine_module, "physical_memory_bytes", lambda: 96 * GiB)
    with pytest.raises(PlanError, match="host RAM"):
        gpu_plans("offload")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_plans(None) == []


def test_describe_weights_says_what_load_would_load(tmp_path):
    info = describe_weights(EngineSpec(weights="tiny", data_dir=tmp_path, device="cpu"))
    assert info.smoke_test and info.device == "cpu" and info.notice and info.plan_summary is None
    assert (info.path / "model_index.json").is_file()
    with pytest.raises(WeightsError, match="use auto, tiny or a weights directory"):
        describe_weights(EngineSpec(weights=str(tmp_path / "nothing"), data_dir=tmp_path))


@pytest.mark.parametrize(
    ("error", "is_oom"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),  # not a device error, whatever it says
    ],
)
def test_what_counts_as_out_of_memory(error, is_oom):
    from pipeline.generation.runtime import is_out_of_memory

    assert is_out_of_memory(error) is is_oom


def test_an_accelerator_error_saying_out_of_memory_is_out_of_memory():
    from pipeline.generation.runtime import is_out_of_memory

    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is None:
        pytest.skip("this torch has no AcceleratorError")
    # Built without its C++ constructor's arguments: the class is what matters here.
    error = accelerator_error.__new__(accelerator_error)
    Exception.__init__(error, "CUDA error: out of memory")
    assert is_out_of_memory(error)
    other = accelerator_error.__new__(accelerator_error)
    Exception.__init__(other, "CUDA error: an illegal memory access was encountered")
    assert not is_out_of_memory(other)
