"""The pipeline's one door: load, generate, admit; out-of-memory translated with its phase."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from PIL import Image

from pipeline.engine import Capacity, Engine, EngineSpec, admit, image_size
from pipeline.errors import OutOfMemory, RequestTooLarge, StartImageError
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


def test_out_of_memory_names_the_phase_and_the_next_job_runs(engine, tmp_path):
    def exhausted(progress):
        if progress.stage == "stage2":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory, match="during stage2") as caught:
        engine.generate(PARAMS, png(), tmp_path / "oom.mp4", exhausted)
    assert caught.value.phase == "stage2" and "fewer frames" in str(caught.value)
    assert not (tmp_path / "oom.mp4").exists()
    assert engine.generate(PARAMS, png(), tmp_path / "next.mp4").path.is_file()


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
    code = "import sys, pipeline.engine, pipeline.params, pipeline.errors; " \
           "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
