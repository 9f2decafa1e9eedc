"""`weights check`: compare a weights directory's tensors with the architecture, reading headers only.

A safetensors file starts with an 8-byte little-endian header length and a JSON header that
lists every tensor's dtype, shape and byte range. Reading just that takes milliseconds even for
a 46 GB file, and it is all we need to prove that the files fit the model: each component is
instantiated on the meta device (real configs, or the directory's own `config.json`) and its
state dict's names and shapes are compared with the headers. No tensor data is read.

The header is parsed by hand (a dozen lines) rather than with `safetensors.safe_open`, because
safe_open mmaps the file and rejects a truncated one outright; here a truncated file is one
more finding to report next to the others, not a crash.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from transformers import AutoConfig

from pipeline.weights.registry import COMPONENT_CLASSES, MODEL_INDEX, REAL_CONFIGS, meta_module

MAX_HEADER = 100 * 1024 * 1024  # the format's own limit; anything larger is not a safetensors file

# Gemma 3 checkpoints on the hub use transformers 4.x names; transformers 5 renames them on load
# (its conversion_mapping for the llava-style models). Same renames, prefix only.
TEXT_ENCODER_RENAMES = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("language_model.", "model.language_model."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)


class HeaderError(ValueError):
    """A file that is not a readable safetensors file."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    end: int  # last byte offset of the data, relative to the data section


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """(tensors, metadata, bytes the data section needs) from one safetensors file's header."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise HeaderError(f"{path}: shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER:
            raise HeaderError(f"{path}: header length {length} is not plausible")
        blob = f.read(length)
    if len(blob) != length:
        raise HeaderError(f"{path}: header cut short ({len(blob)} of {length} bytes)")
    try:
        header = json.loads(blob)
    except ValueError as exc:
        raise HeaderError(f"{path}: header is not JSON ({exc})") from exc
    metadata = header.pop("__metadata__", None) or {}
    tensors = {
        name: TensorInfo(str(info["dtype"]), tuple(int(d) for d in info["shape"]), int(info["data_offsets"][1]))
        for name, info in header.items()
    }
    return tensors, metadata, 8 + length + max((t.end for t in tensors.values()), default=0)


@dataclass
class ComponentReport:
    name: str
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # name, got, want
    truncated: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    config_differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key: (on disk, real)
    notes: list[str] = field(default_factory=list)  # informational: not a mismatch
    dtypes: dict[str, int] = field(default_factory=dict)
    expected_count: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape or self.truncated or self.unreadable
                    or self.config_differences)

    def lines(self, limit: int = 8) -> list[str]:
        if not self.files and not self.unreadable:
            return [f"{self.name}: MISSING {', '.join(self.missing) or '(no safetensors files)'}"]
        dtypes = ", ".join(f"{k} x{v}" for k, v in sorted(self.dtypes.items()))
        head = f"{self.name}: {'ok' if self.ok else 'MISMATCH'} ({self.expected_count} tensors expected; {dtypes})"
        out = [head]

        def some(label: str, items: list[str]) -> None:
            if items:
                shown = ", ".join(items[:limit]) + (f", … (+{len(items) - limit})" if len(items) > limit else "")
                out.append(f"  {label} ({len(items)}): {shown}")

        some("missing", self.missing)
        some("unexpected", self.unexpected)
        some("wrong shape", [f"{n} {list(got)} != {list(want)}" for n, got, want in self.wrong_shape])
        some("truncated file", self.truncated)
        some("unreadable", self.unreadable)
        diffs = [f"{k}={a!r} (real {b!r})" for k, (a, b) in self.config_differences.items()]
        some("config differs from LTX-2.3", diffs)
        some("note", self.notes)
        return out


@dataclass
class CheckReport:
    root: Path
    components: list[ComponentReport]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.components)

    def text(self) -> str:
        lines = [f"{self.root}: {'all components match' if self.ok else 'problems found'}"]
        for c in self.components:
            lines += c.lines()
        return "\n".join(lines)


def _normalise_text_encoder_key(key: str) -> str:
    for old, new in TEXT_ENCODER_RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _meta_instance(name: str, folder: Path, against: str) -> torch.nn.Module:
    if against != "own":
        return meta_module(name)  # cached, read-only
    cls = COMPONENT_CLASSES[name]
    with init_empty_weights(include_buffers=True):
        if name == "text_encoder":
            return cls(AutoConfig.from_pretrained(folder))
        return cls.from_config(cls.load_config(folder))


def expected_shapes(module: torch.nn.Module) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(name -> shape for every saved tensor, names that are optional because they are tied)."""
    shapes: dict[str, tuple[int, ...]] = {}
    first_name: dict[int, str] = {}
    tied: set[str] = set()
    for key, tensor in module.state_dict(keep_vars=True).items():
        shapes[key] = tuple(tensor.shape)
        if id(tensor) in first_name:  # a tied weight is saved once; its alias may be absent
            tied.add(key)
        first_name.setdefault(id(tensor), key)
    return shapes, tied


def _config_differences(name: str, folder: Path) -> dict[str, tuple[Any, Any]]:
    if name == "text_encoder" or not (folder / "config.json").is_file():
        return {}
    on_disk = json.loads((folder / "config.json").read_text())
    norm = lambda v: json.loads(json.dumps(v))  # tuples vs lists  # noqa: E731
    return {
        key: (on_disk[key], real)
        for key, real in REAL_CONFIGS[name].items()
        if key in on_disk and norm(on_disk[key]) != norm(real)
    }


def check_component(name: str, folder: Path, against: str = "real") -> ComponentReport:
    """Compare one component folder's safetensors headers with its meta-device instance."""
    report = ComponentReport(name)
    found: dict[str, TensorInfo] = {}
    for path in sorted(folder.glob("*.safetensors")):
        report.files.append(path.name)
        try:
            tensors, _, needed = read_header(path)
        except HeaderError as exc:
            report.unreadable.append(str(exc))
            continue
        if path.stat().st_size < needed:
            report.truncated.append(f"{path.name} ({path.stat().st_size:,} of {needed:,} bytes)")
        for key, info in tensors.items():
            found[_normalise_text_encoder_key(key) if name == "text_encoder" else key] = info
            report.dtypes[info.dtype] = report.dtypes.get(info.dtype, 0) + 1
    if not report.files:
        report.missing.append("(no *.safetensors files)")
        return report
    want, tied = expected_shapes(_meta_instance(name, folder, against))
    report.expected_count = len(want)
    report.missing = sorted(k for k in want if k not in found and k not in tied)
    report.unexpected = sorted(k for k in found if k not in want)
    report.wrong_shape = sorted(
        (k, found[k].shape, want[k]) for k in want if k in found and found[k].shape != want[k]
    )
    if against == "real":
        report.config_differences = _config_differences(name, folder)
    return report


def check_directory(root: Path, against: str | None = None) -> CheckReport:
    """Check every component folder of a diffusers-layout weights directory.

    `against` is "real" (the LTX-2.3 configs shipped here) or "own" (each folder's
    config.json); by default the tiny smoke-test model is checked against its own configs
    and anything else against the real ones.
    """
    root = Path(root)
    if against is None:
        index = root / MODEL_INDEX
        smoke = index.is_file() and bool(json.loads(index.read_text()).get("smoke_test"))
        against = "own" if smoke else "real"
    components = []
    for name in COMPONENT_CLASSES:
        folder = root / name
        if not folder.is_dir():
            components.append(ComponentReport(name, missing=[f"(folder {name}/ is missing)"]))
            continue
        components.append(check_component(name, folder, against))
    return CheckReport(root, components)
