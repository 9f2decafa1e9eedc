"""Shared fixtures: the tiny model, built once per session, and a generator that keeps it resident."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.weights.tiny import ensure_tiny_model


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide data dir whose cache holds the tiny model; subprocesses get it via LTX_DATA_DIR."""
    path = tmp_path_factory.mktemp("ltx-data")
    os.environ["LTX_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_weights(data_dir: Path) -> Path:
    return ensure_tiny_model(data_dir / "cache")


@pytest.fixture(scope="session")
def tiny_generator(tiny_weights: Path):
    from pipeline.generation.runtime import VideoGenerator

    return VideoGenerator.from_directory(tiny_weights)


