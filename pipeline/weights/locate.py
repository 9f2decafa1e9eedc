"""Which weights a process loads: `auto`, `tiny` or a directory, and where they live by default."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import WeightsError
from pipeline.weights.loader import is_weights_directory
from pipeline.weights.lock import MixedVersionsError, weights_version
from pipeline.weights.registry import MODEL_INDEX
from pipeline.weights.tiny import TINY_LABEL, ensure_tiny_model

TINY_NOTICE = (
    f"NOTICE: running the {TINY_LABEL}. Outputs are noise. "
    "Pull real weights with `ltx-server weights pull` and run on a GPU for real video."
)


def default_data_dir() -> Path:
    """`$LTX_DATA_DIR`, else ./data: jobs, results and the tiny model's cache live here."""
    return Path(os.environ.get("LTX_DATA_DIR", "data")).resolve()


def default_weights_dir(data_dir: Path | None = None) -> Path:
    """`$LTX_WEIGHTS_DIR`, else <data dir>/weights/ltx-2.3: where `weights pull` puts real weights."""
    env = os.environ.get("LTX_WEIGHTS_DIR")
    return Path(env).resolve() if env else (data_dir or default_data_dir()) / "weights" / "ltx-2.3"


@dataclass(frozen=True)
class WeightsChoice:
    """The directory to load, the device to run on, whether it is the smoke-test model, its release."""

    path: Path
    device: str
    smoke_test: bool
    notice: str | None = None
    version: str | None = None  # the LTX release of the files, "2.3-1.1" (see `weights_version`)

    @property
    def version_text(self) -> str:
        """For the start log: which model version is loaded."""
        if self.smoke_test:
            return "no model version: the tiny smoke-test model"
        return f"model version {self.version}" if self.version else "model version not recorded"


def resolve_weights(spec: str, data_dir: Path | None = None, device: str | None = None) -> WeightsChoice:
    """Turn `--weights auto|tiny|PATH` into a concrete choice.

    `auto` picks the real weights when a GPU and the weights directory are both present,
    otherwise the tiny model with a loud notice. Real weights whose files belong to different
    releases are refused (`WeightsError`), naming them.
    """
    data_dir = data_dir or default_data_dir()
    has_gpu = torch.cuda.is_available()
    device = device or ("cuda" if has_gpu else "cpu")
    if spec == "tiny":
        return WeightsChoice(ensure_tiny_model(data_dir / "cache"), device, True, TINY_NOTICE)
    if spec == "auto":
        real = default_weights_dir(data_dir)
        if has_gpu and is_weights_directory(real):
            return WeightsChoice(real, device, False, version=_version(real))
        why = "no GPU is visible" if not has_gpu else f"no weights at {real}"
        tiny = ensure_tiny_model(data_dir / "cache")
        return WeightsChoice(tiny, device, True, f"{TINY_NOTICE} (auto: {why})")
    path = Path(spec).expanduser().resolve()
    if not is_weights_directory(path):
        raise WeightsError(
            f"--weights {spec}: {path} has no {MODEL_INDEX} nor official LTX-2.3 checkpoint; "
            "use auto, tiny or a weights directory"
        )
    index = path / MODEL_INDEX
    smoke = index.is_file() and bool(json.loads(index.read_text()).get("smoke_test"))
    return WeightsChoice(path, device, smoke, TINY_NOTICE if smoke else None, None if smoke else _version(path))


def _version(path: Path) -> str | None:
    try:
        return weights_version(path)
    except MixedVersionsError as exc:
        raise WeightsError(str(exc)) from exc
